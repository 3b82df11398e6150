"""The Qwen-Image family: ``QwenImagePipeline`` (QwenImageTransformer2DModel, a dual-stream MMDiT with its own 3-axis
rotary embedding; a Qwen2.5-VL text encoder; the Wan-style causal 3-D VAE ``AutoencoderKLQwenImage``; flow
matching).

Everything follows ``QwenImagePipeline.__call__``: the prompt goes through the pipeline's own ``encode_prompt``
(by keyword, at ``__call__``'s ``max_sequence_length``), which wraps it in the pipeline's prompt template, keeps the
text encoder's last hidden states of the prompt's own tokens and drops the template's system part. Classifier-free
guidance is the pipeline's "true CFG", weighted by the job's ``true_cfg_scale`` (as for Flux; the job's
``guidance_scale`` is an input only of guidance-distilled transformers, which QwenImagePipeline cannot run, and
is ignored as the pipeline ignores it), and the guided prediction is rescaled to the conditional prediction's norm
per token (``combine_guidance``). The sampler's sigmas and resolution-dependent shift ``mu`` are the pipeline's; the
latent's per-channel normalisation is undone and it is decoded as a video of one frame.

The loop keeps the latent unpacked, (1, C, H, W), so patch bands are row bands as for every other family;
``denoise`` packs the latent (or a band of it) into 2x2 patches with the pipeline's own ``_pack_latents``, calls
the transformer with the whole image's shape (``img_shapes``: the patch plan keeps the band's rows of its rotary
embedding) and unpacks its output with ``_unpack_latents``. The flow-matching step is elementwise, so stepping the
unpacked latent equals stepping the packed one, and the rescale's per-token norm stays within a band's 2x2 patches.

Sequence parallelism runs diffusers' own context-parallel plan of the transformer (``_cp_plan``: image and text
tokens, the mask and the rotary tables split between a branch's workers). The image's tokens and the heads are
checked at submit (``sequence_shape``); the prompt's length is known only once it is encoded, in the worker, where
each branch's text is padded with masked zeros to a multiple of the workers (``sequence_conditioning``, exact:
see ``conditioning``). Ulysses takes the mask; diffusers' Ring takes none, so a render whose forward carries one
(a padded prompt, or two branches of unequal length batched) runs its Ring workers as Ulysses, which gives the
same result, and says so in its report (a Ring degree is refused at submit when the heads do not split between
all of a branch's workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.errors import ModelDirectoryError
from pipelines.families.base import Conditioning, ModelFamily, call_option

PACKING = 2
"""Latent rows and columns packed into one token (QwenImagePipeline's 2x2 patches)."""
UNSUPPORTED = {
    "guidance_embeds": "a guidance-distilled transformer (QwenImagePipeline's call to it fails in diffusers)",
    "use_additional_t_cond": "an additional timestep condition, which QwenImagePipeline does not pass",
}
"""Transformer config flags QwenImagePipeline cannot run, and why."""
UNBANDED = {
    "zero_cond_t": "its per-token modulation index spans the whole image",
    "use_layer3d_rope": "its layered rotary embedding is not the image's own rows",
}
"""Transformer config flags (of the edit and layered models) the patch plan does not band, and why."""


class QwenImageFamily(ModelFamily):
    name = "qwenimage"
    job = "image"
    pipelines = ("QwenImagePipeline",)
    call_guidance = {  # guidance_scale None: read by guidance-distilled checkpoints only
        "QwenImagePipeline": (1.0, 4.0),
    }
    denoiser = "transformer"
    denoisers = ("QwenImageTransformer2DModel",)
    samplers = ("pipeline", "flow-euler")  # flow matching: the beta-schedule samplers do not fit
    strategies = ("none", "patch", "sequence")
    cache_modes = ("none", "first-block", "teacache", "taylorseer")
    true_cfg = True  # QwenImagePipeline weighs its CFG with true_cfg_scale, as FluxPipeline does
    encode_options = ("max_sequence_length",)

    # --- a pipeline directory, at submit: JSON only --------------------------------------------
    def check_dir(self, path: Path, index: dict) -> None:
        config = self.component_config(path, "transformer")
        for flag, why in UNSUPPORTED.items():
            if config.get(flag):
                raise ModelDirectoryError(f"{path / 'transformer'}: {flag} is set, {why}")

    def plan_error(self, strategy: str, path: str | Path) -> str | None:
        problem = super().plan_error(strategy, path)
        if problem is None and strategy == "patch":
            config = self.component_config(path, "transformer")
            for flag, why in UNBANDED.items():
                if config.get(flag):
                    return f"the {self.name} model at {path} sets {flag}: no patch bands ({why})"
        return problem

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer for the cost model ("mmdit-shapes": packed 2x2 tokens and the image's shape in tokens);
        the text at a long prompt's length (an assumption: QwenImagePipeline passes only the prompt's own tokens),
        a step of batch 1 (true CFG off, __call__'s default); its 3-D VAE is not one the cost model builds."""
        from parallel.cost.models import QWEN_TEXT_TOKENS, ModelSpec, with_defaults

        found = self.component_config(path, "transformer")
        if not found:
            return None
        config = with_defaults(found["_class_name"], found)
        return ModelSpec(
            name=str(path),
            class_name=found["_class_name"],
            config=config,
            kind="mmdit-shapes",
            latent_channels=config["in_channels"] // (PACKING * PACKING),
            vae_scale=self.latent_factor(path),
            text_len=QWEN_TEXT_TOKENS,
            text_dim=config["joint_attention_dim"],
            dtype=dtype,
            vae_config=self.cost_decoder(path),
            packing=PACKING,
            batch=1,
        )

    def band_alignment(self, path: str | Path) -> int:
        """A band is whole rows of 2x2 patches."""
        return PACKING

    def cost_prompt_tokens(self, path: str | Path, max_sequence_length: int | None) -> int | None:
        """None: a prompt keeps its own tokens (at most the job's length), which the description's estimate stands
        for."""
        return None

    def sequence_shape(self, path: str | Path, height: int, width: int, prompt_tokens: int | None = None):
        """The packed image tokens and the heads the context-parallel plan splits. Its text tokens are left out
        (0): a prompt's length is known only when the worker encodes it (QwenImagePipeline keeps the prompt's own
        tokens), and ``sequence_conditioning`` pads it there to a multiple of the workers, so any length splits.
        The padding is masked, which Ring cannot take (``masked_text``): the heads must also split between all of
        a branch's workers, for its Ring workers to run as Ulysses."""
        from pipelines.families.base import SequenceShape

        step = self.latent_factor(path) * PACKING
        heads = self.component_config(path, "transformer").get("num_attention_heads", 24)
        return SequenceShape((height // step) * (width // step), 0, heads, masked_text=True)

    def sequence_conditioning(self, cond, workers: int, apart: bool):
        """Each branch's text padded with masked zeros to a multiple of ``workers`` (exact: see ``conditioning``);
        the reason Ring cannot run it when a forward then carries a mask."""
        return cond.split_evenly(workers, apart)

    def latent_factor(self, path: str | Path) -> int:
        """The VAE's downsampling, as QwenImagePipeline computes its ``vae_scale_factor``."""
        return 2 ** len(self.component_config(path, "vae").get("temperal_downsample", [False, True, True]))

    def latent_space(self, path: str | Path) -> tuple[int, int]:
        vae = self.component_config(path, "vae")
        return vae.get("z_dim", 16), len(vae.get("temperal_downsample", [False, True, True])) + 1

    def size_error(self, path: str | Path, height: int, width: int) -> tuple[str, str] | None:
        """Sizes that are not whole 2x2 tokens of latent pixels (QwenImagePipeline would round them down)."""
        return self.whole_units_error(
            path, height, width, self.latent_factor(path), PACKING, "the 2x2 packing of latents into tokens"
        )

    # --- a loaded model, in a worker -----------------------------------------------------------
    def latent_shape(self, pipe: Any, height: int, width: int) -> tuple[int, int, int, int]:
        """QwenImagePipeline.prepare_latents' shape before packing, without its frame axis: (1, in_channels / 4,
        rows, columns). Its noise, drawn at (1, 1, C, rows, columns), holds the same values in the same order."""
        factor = pipe.vae_scale_factor * PACKING
        if height % factor or width % factor:
            raise ValueError(
                f"height/width: {height}x{width} must be multiples of {factor} for a Qwen-Image model"
            )
        channels = self.denoiser_of(pipe).config.in_channels // (PACKING * PACKING)
        return (1, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    def set_timesteps(self, pipe: Any, scheduler: Any, steps: int, latent_shape: tuple, device: Any) -> None:
        """QwenImagePipeline's sigmas and its shift ``mu`` for the image's token count, from the sampler's config."""
        import numpy as np
        from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps

        sigmas = np.linspace(1.0, 1 / steps, steps)
        config = scheduler.config
        tokens = (latent_shape[2] // PACKING) * (latent_shape[3] // PACKING)
        mu = calculate_shift(
            tokens,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)

    def decode(self, pipe: Any, latents, tiled: bool | None = None):
        from pipelines.families.qwenimage.decode import decode_one_frame

        return decode_one_frame(pipe, latents, tiled)

    def encode(
        self,
        pipe,
        prompt,
        negative_prompt,
        guidance_scale,
        device,
        image_size=None,
        true_cfg_scale: float = 1.0,
        max_sequence_length: int | None = None,
    ) -> Conditioning:
        """``true_cfg_scale`` > 1 adds the negative prompt's branch, as QwenImagePipeline does with a negative prompt;
        ``guidance_scale`` is ignored (the family refuses the guidance-distilled transformers that would take it);
        ``max_sequence_length``: the text tokens kept (None: ``__call__``'s default)."""
        from pipelines.families.qwenimage.conditioning import EMBEDS, MASK, QwenConditioning

        if image_size is None:
            raise ValueError(
                "image_size: a Qwen-Image model's rotary embedding needs the image's (height, width)"
            )
        guided = true_cfg_scale > 1.0 and bool(negative_prompt)  # the pipeline's true CFG needs a negative prompt
        # the text length __call__ crops to by default (encode_prompt's own default differs)
        tokens = call_option(pipe, "max_sequence_length", max_sequence_length)
        embeds, mask = pipe.encode_prompt(
            prompt=prompt, device=device, num_images_per_prompt=1, max_sequence_length=tokens
        )
        negative = None
        if guided:
            negative_embeds, negative_mask = pipe.encode_prompt(
                prompt=negative_prompt, device=device, num_images_per_prompt=1, max_sequence_length=tokens
            )
            negative = {EMBEDS: negative_embeds, MASK: negative_mask}
        _, _, rows, columns = self.latent_shape(pipe, *image_size)
        return QwenConditioning(
            self,
            {EMBEDS: embeds, MASK: mask},
            negative,
            true_cfg_scale if guided else 1.0,
            tuple(image_size),
            # the whole image's (frames, token rows, token columns), as __call__'s img_shapes hold it
            extra={"img_shape": (1, rows // PACKING, columns // PACKING)},
        )

    def denoise(self, model, latent, t, inputs: dict[str, Any], cond: Conditioning):
        """Pack the (band of the) latent, run the transformer as QwenImagePipeline does, unpack its output."""
        from diffusers import QwenImagePipeline

        batch, channels, rows, columns = latent.shape
        packed = QwenImagePipeline._pack_latents(latent, batch, channels, rows, columns)
        timestep = t.expand(batch).to(latent.dtype)
        output = model(
            hidden_states=packed,
            timestep=timestep / 1000,
            guidance=None,
            img_shapes=[[cond.extra["img_shape"]]] * batch,
            attention_kwargs={},
            return_dict=False,
            **inputs,
        )[0]
        return unpack(output, rows, columns)

    def combine_guidance(self, uncond, cond, scale: float):
        """QwenImagePipeline's true CFG: the combined prediction rescaled, token by token (a 2x2 patch of the
        latent), to the conditional prediction's norm."""
        import torch
        from diffusers import QwenImagePipeline

        batch, channels, rows, columns = cond.shape
        combined = uncond + scale * (cond - uncond)
        packed = QwenImagePipeline._pack_latents(combined, batch, channels, rows, columns)
        cond_norm = torch.norm(
            QwenImagePipeline._pack_latents(cond, batch, channels, rows, columns), dim=-1, keepdim=True
        )
        noise_norm = torch.norm(packed, dim=-1, keepdim=True)
        return unpack(packed * (cond_norm / noise_norm), rows, columns)

    def patch_plan(self, model, config):
        from pipelines.families.qwenimage.patch import qwen_patch_plan

        return qwen_patch_plan(model, config)


def unpack(packed, rows: int, columns: int):
    """Packed tokens (B, tokens, 4C) -> the latent (B, C, rows, columns), with QwenImagePipeline's
    ``_unpack_latents`` (which takes pixel sizes and the VAE factor: with a factor of 1 they are latent rows and
    columns) less its frame axis."""
    from diffusers import QwenImagePipeline

    return QwenImagePipeline._unpack_latents(packed, rows, columns, 1).squeeze(2)


QWENIMAGE = QwenImageFamily()
