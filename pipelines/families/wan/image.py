"""Wan image-to-video: the conditioning image of a ``WanImageToVideoPipeline`` render, per frame block.

diffusers' ``WanImageToVideoPipeline`` conditions a video on its first frame in two ways, and both are its own
code called here by keyword:

- Wan 2.1 I2V's CLIP image embeddings (``encode_image``; only when the transformer has an ``image_dim``):
  projected by the transformer's ``condition_embedder`` and put in front of the text tokens, where each block's
  cross-attention (diffusers' ``WanAttnProcessor``, its ``add_k_proj``/``add_v_proj``) attends to them
  separately (the frame plan, ``frames.py``, passes them on; it copies none of that);
- the first frame, VAE-encoded with black frames after it, behind a mask that is 1 on the first latent frame
  and 0 after (``video_processor.preprocess`` then ``prepare_latents``): 4 + ``z_dim`` channels concatenated to
  every step's latent input.

The frame pipeline cuts the video into blocks; the conditioning frame belongs to block 0 only. ``prepare_latents``
runs once, on the first blocks of the video up to ``CONDITION_HORIZON`` latent frames after block 0: block 0 gets the
image's mask and latent (exactly what diffusers gives a video of one block: the VAE is causal), blocks 1 to m a zero
mask and the latent of the black frames at their place after the image (exactly diffusers' conditioning of those
frames in a video of any length, by the same causality), and every block after m block m's. The encoder carries the
image into the black frames' latents through its cache, fading (a tiny random-weight VAE: 0.47 between latent frames 1
and 2, 1e-3 between 18 and 19); with only block 1's for every later block (before) blocks 2 and 3 of a tiny pipeline
were 0.43-0.75 off diffusers' whole-video conditioning. Exact for every block would mean streaming the encoder's cache
over the video's black frames on stage 0 and checkpointing it; the horizon keeps the conditioning's memory and
encoding bounded whatever the video's length.
"""

from __future__ import annotations

from typing import Any

import torch

from pipelines.condition_image import open_image

CONDITION_HORIZON = 16
"""Latent frames after block 0 conditioned exactly as in diffusers' whole video (rounded up to whole blocks)."""


def i2v_pipeline(pipe: Any):
    """diffusers' WanImageToVideoPipeline over a loaded Wan video model's components (made once, kept)."""
    if pipe._image_pipeline is None:
        from diffusers import WanImageToVideoPipeline

        experts = getattr(pipe.transformer, "experts", (pipe.transformer, None))
        boundary = getattr(pipe.transformer, "boundary_timestep", None)
        scheduler = pipe.make_scheduler()
        pipe._image_pipeline = WanImageToVideoPipeline(
            tokenizer=pipe.tokenizer,
            text_encoder=pipe.text_encoder,
            vae=pipe.vae,
            scheduler=scheduler,
            image_processor=pipe.image_processor,
            image_encoder=pipe.image_encoder,
            transformer=experts[0],
            transformer_2=experts[1],
            boundary_ratio=None if boundary is None else boundary / scheduler.config.num_train_timesteps,
            expand_timesteps=pipe.expand_timesteps,
        )
    return pipe._image_pipeline


@torch.no_grad()
def image_conditioning(pipe: Any, image: str, height: int, width: int, block_frames: int) -> dict[str, torch.Tensor]:
    """What an image-to-video render adds to its encoded prompt: ``first`` ([1, 4 + z_dim, block_frames, h, w]: block
    0's conditioning) and ``rest`` (blocks 1 to m's, [1, 4 + z_dim, m * block_frames, h, w]; a later block takes block
    m's) and, for a transformer with an ``image_dim``, ``image`` (the CLIP embeddings); for TI2V
    (``expand_timesteps``) ``first_latent`` only ([1, z_dim, 1, h, w]: the image's normalised latent, which the first
    latent frame is held at). Batch-first, so guidance batches them with the prompt."""
    reference = i2v_pipeline(pipe)
    picture = open_image(image)
    device = pipe.vae.device
    out: dict[str, torch.Tensor] = {}
    if pipe.first_expert.config.image_dim is not None:
        if pipe.image_encoder is None:
            raise ValueError("model: its transformer takes CLIP image embeddings but it has no image_encoder")
        out["image"] = reference.encode_image(image=picture, device=device)
    pixels = reference.video_processor.preprocess(picture, height=height, width=width).to(device, torch.float32)
    z_dim = pipe.vae.config.z_dim
    factor = pipe.vae_scale_factor
    if pipe.expand_timesteps:  # TI2V: the image alone encoded, the video's first latent frame (the frame plan)
        latents = torch.zeros(1, z_dim, block_frames, height // factor, width // factor, device=device)
        _, condition, _ = reference.prepare_latents(
            image=pixels, batch_size=1, num_channels_latents=z_dim, height=height, width=width,
            num_frames=pipe.video_frames(block_frames), dtype=torch.float32, device=device, generator=None,
            latents=latents,
        )
        out["first_latent"] = condition
        return out
    blocks = 1 + -(-CONDITION_HORIZON // block_frames)  # block 0 and the blocks m after it
    latents = torch.zeros(1, z_dim, blocks * block_frames, height // factor, width // factor, device=device)
    _, condition = reference.prepare_latents(
        image=pixels,
        batch_size=1,
        num_channels_latents=z_dim,
        height=height,
        width=width,
        num_frames=pipe.video_frames(blocks * block_frames),
        dtype=torch.float32,
        device=device,
        generator=None,
        latents=latents,
    )
    out["first"] = condition[:, :, :block_frames]
    out["rest"] = condition[:, :, block_frames:]
    return out


def hold_first_frame(latent: torch.Tensor, image_latent: torch.Tensor) -> torch.Tensor:
    """TI2V image-to-video (``expand_timesteps``): [B, C, F, H, W] ``latent`` with its first latent frame the image's
    [B or 1, C, 1, H, W] latent, as ``WanImageToVideoPipeline`` builds each step's model input and ends the video (its
    mask is 0 on that frame and 1 elsewhere, so the mix is exactly this)."""
    return torch.cat([image_latent.to(latent), latent[:, :, 1:]], dim=2)


def first_frame_at_zero(timestep: torch.Tensor, latent_shape: torch.Size, patch_size: tuple[int, int, int]) -> torch.Tensor:
    """TI2V image-to-video: [B] step timesteps -> [B, tokens] of a [B, C, F, H, W] latent, the first latent frame's
    tokens at 0: the timestep ``WanImageToVideoPipeline`` passes under ``expand_timesteps`` (its first-frame mask times
    t, per patch), in float32 as there."""
    _, _, frames, rows, cols = latent_shape
    p_t, p_h, p_w = patch_size
    per_frame = (rows // p_h) * (cols // p_w)
    per_token = timestep.to(torch.float32)[:, None].expand(-1, (frames // p_t) * per_frame).clone()
    per_token[:, :per_frame] = 0
    return per_token
