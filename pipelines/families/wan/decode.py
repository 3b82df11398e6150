"""Stream the frame blocks of one video through Wan's causal 3-D VAE (``AutoencoderKLWan``), block by block.

diffusers' ``AutoencoderKLWan._decode`` already walks the latent one frame at a time, carrying a cache
of each causal convolution's last input frames from one latent frame to the next. ``WanBlockDecoder``
runs that same loop but keeps the cache between calls, so frame blocks decoded as they leave the
queue concatenate to exactly ``vae.decode`` of the whole latent video, while only one block is held.
The first latent frame decodes to one video frame, each later one to ``scale_factor_temporal``.

The cache is the decoder's own (one per video, never the VAE module's), so measuring a decode or
rendering another video on the same cached model does not disturb it. A service job's checkpoint
carries it (``runtime.video_state.export_decoder_state``), so a video resumed mid-way decodes the frames
at the resume point as the uninterrupted render does.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, unpatchify


def denormalize(vae: AutoencoderKLWan, latent: torch.Tensor) -> torch.Tensor:
    """The transformer's normalised latent -> the VAE's latent, as WanPipeline does before decoding."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latent.device, latent.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latent.device, latent.dtype)
    return latent / inv_std + mean


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in [-1, 1] -> [F, H, W, 3] uint8."""
    frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


class WanBlockDecoder:
    """Decodes consecutive frame blocks of one video; call it on the blocks in video order."""

    def __init__(self, vae: AutoencoderKLWan) -> None:
        self.vae = vae
        self.cache: list = [None] * sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self.first = True
        """The next latent frame is the video's first (decoded to one frame, no cache yet)."""

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[1, C, F, h, w] normalised latent frames -> [1, 3, F', H, W] video in [-1, 1]."""
        vae = self.vae
        z = denormalize(vae, latent.to(device=vae.device, dtype=vae.dtype))
        x = vae.post_quant_conv(z)  # kernel 1 in time: frame by frame, as on the whole video
        outs = []
        for i in range(x.shape[2]):
            outs.append(
                vae.decoder(x[:, :, i : i + 1], feat_cache=self.cache, feat_idx=[0], first_chunk=self.first)
            )
            self.first = False
        out = torch.cat(outs, 2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return out.clamp(-1.0, 1.0)

    def __call__(self, latent: torch.Tensor) -> np.ndarray:
        """[1, C, F, h, w] -> [F', H, W, 3] uint8 frames, continuing the video."""
        return to_uint8_frames(self.decode(latent))
