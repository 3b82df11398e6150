"""The Flux family: ``FluxPipeline`` (FLUX.1: FluxTransformer2DModel with double- and single-stream blocks,
CLIP for the pooled text and T5 for the text tokens, flow matching).

Everything follows ``FluxPipeline.__call__``: the prompt goes through the pipeline's own ``encode_prompt``
(by keyword); the job's ``guidance_scale`` is the distilled guidance the transformer takes as an input
(``guidance_embeds``), and classifier-free guidance proper is Flux's optional "true CFG", weighted by the job's
``true_cfg_scale`` (both branches through the transformer, combined by the generic CFG predictors). The
sampler's sigmas and resolution-dependent shift ``mu`` are the pipeline's; the VAE's latent is shifted and
scaled back before decoding.

The loop keeps the latent unpacked, (1, C, H, W), so patch bands are row bands as for every other family;
``denoise`` packs the latent (or a band of it) into 2x2 patches with the pipeline's own ``_pack_latents``,
calls the transformer with the whole image's position ids (the patch plan keeps a band's rows of them) and
unpacks its output with ``_unpack_latents``. The flow-matching step is elementwise, so stepping the unpacked
latent equals stepping the packed one.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pipelines.families.base import Conditioning, ModelFamily, call_option

PACKING = 2
TEXT_TOKENS = 512
"""The T5 tokens FluxPipeline.__call__ pads the prompt to by default (``max_sequence_length``): its
context-parallel plan splits them beside the image tokens. Kept here so that checking a job imports no
diffusers; tests/test_flux_sequence.py holds it to diffusers' own default."""
"""Latent rows and columns packed into one token (FluxPipeline's 2x2 patches)."""


class FluxFamily(ModelFamily):
    name = "flux"
    job = "image"
    pipelines = ("FluxPipeline",)
    call_guidance = {"FluxPipeline": (3.5, 1.0)}
    denoiser = "transformer"
    denoisers = ("FluxTransformer2DModel",)
    samplers = ("pipeline", "flow-euler")  # flow matching: the beta-schedule samplers do not fit
    strategies = ("none", "patch", "sequence")
    cache_modes = ("none", "first-block", "teacache", "taylorseer")
    stack_layers = ("num_layers", "num_single_layers")  # transformer_blocks, then single_transformer_blocks
    true_cfg = True
    encode_options = ("max_sequence_length", "prompt_2", "negative_prompt_2")

    def band_alignment(self, path: str | Path) -> int:
        """A band is whole rows of 2x2 patches."""
        return PACKING

    def latent_factor(self, path: str | Path) -> int:
        """The VAE's downsampling, as FluxPipeline computes its ``vae_scale_factor``."""
        return 2 ** (len(self.component_config(path, "vae").get("block_out_channels", [0] * 4)) - 1)

    def sequence_shape(self, path: str | Path, height: int, width: int, prompt_tokens: int | None = None):
        """Flux's context-parallel plan splits the packed image tokens and the T5 tokens, padded to the job's
        ``max_sequence_length`` (``prompt_tokens``) or the pipeline's default."""
        from pipelines.families.base import SequenceShape

        step = self.latent_factor(path) * PACKING
        heads = self.component_config(path, "transformer")["num_attention_heads"]
        return SequenceShape((height // step) * (width // step), prompt_tokens or TEXT_TOKENS, heads)

    def size_error(self, path: str | Path, height: int, width: int) -> tuple[str, str] | None:
        """Sizes that are not whole 2x2 tokens of latent pixels (FluxPipeline would round them down)."""
        return self.whole_units_error(
            path, height, width, self.latent_factor(path), PACKING, "the 2x2 packing of latents into tokens"
        )

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer for the cost model, from its config.json: packed 2x2 tokens ("mmdit-ids"), T5's text
        padded to ``__call__``'s ``max_sequence_length``, the pooled CLIP projection, the distilled guidance; a
        step of batch 1 (``__call__``'s default, true CFG off: profile at batch 2 for a job that turns it on)."""
        from diffusers import FluxPipeline

        from parallel.cost.models import ModelSpec, with_defaults

        found = self.component_config(path, "transformer")
        if not found:
            return None
        config = with_defaults(found["_class_name"], found)
        tokens = inspect.signature(FluxPipeline.__call__).parameters["max_sequence_length"].default
        return ModelSpec(
            name=str(path),
            class_name=found["_class_name"],
            config=config,
            kind="mmdit-ids",
            latent_channels=config["in_channels"] // (PACKING * PACKING),
            vae_scale=self.latent_factor(path),
            text_len=tokens,
            text_dim=config["joint_attention_dim"],
            dtype=dtype,
            vae_config=self.cost_decoder(path),
            extra={"pooled_projections": config["pooled_projection_dim"]},
            packing=PACKING,
            batch=1,
        )

    # --- a loaded model, in a worker -----------------------------------------------------------
    def latent_shape(self, pipe: Any, height: int, width: int) -> tuple[int, int, int, int]:
        """FluxPipeline.prepare_latents' shape before packing: (1, in_channels / 4, rows, columns)."""
        factor = pipe.vae_scale_factor * PACKING
        if height % factor or width % factor:
            raise ValueError(f"height/width: {height}x{width} must be multiples of {factor} for a Flux model")
        channels = self.denoiser_of(pipe).config.in_channels // (PACKING * PACKING)
        return (1, channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    def set_timesteps(self, pipe: Any, scheduler: Any, steps: int, latent_shape: tuple, device: Any) -> None:
        """FluxPipeline's sigmas and its shift ``mu`` for the image's token count, from the sampler's config."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        sigmas = np.linspace(1.0, 1 / steps, steps)
        config = scheduler.config
        if getattr(config, "use_flow_sigmas", False):
            sigmas = None
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
        """Flux's latent normalisation undone (``/ scaling_factor + shift_factor``) before the VAE, on its device
        and in its dtype as FluxPipeline does (on a GPU the division is a multiply by the reciprocal: done on the
        CPU, where a worker's stitched latent arrives, it left bfloat16 values an ulp apart)."""
        from pipelines.sampling import vae_decode

        config = pipe.vae.config
        latents = latents.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
        return vae_decode(pipe, latents / config.scaling_factor + config.shift_factor, tiled)

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
        prompt_2: str | None = None,
        negative_prompt_2: str | None = None,
    ) -> Conditioning:
        """``guidance_scale``: the distilled guidance (an input of the transformer); ``true_cfg_scale`` > 1 adds
        the negative prompt's branch, as FluxPipeline does with a negative prompt; ``max_sequence_length``: T5's
        tokens (None: ``__call__``'s default); ``prompt_2``/``negative_prompt_2``: T5's prompts (None: CLIP's)."""
        from diffusers import FluxPipeline

        if image_size is None:
            raise ValueError("image_size: a Flux model's image position ids need the image's (height, width)")
        guided = true_cfg_scale > 1.0 and bool(negative_prompt)  # the pipeline's true CFG needs a negative prompt
        # the T5 token count __call__ encodes with by default (encode_prompt's own default may differ)
        tokens = call_option(pipe, "max_sequence_length", max_sequence_length)
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=prompt, prompt_2=prompt_2, device=device, num_images_per_prompt=1, max_sequence_length=tokens
        )
        negative = None
        if guided:
            negative_embeds, negative_pooled, _ = pipe.encode_prompt(
                prompt=negative_prompt,
                prompt_2=negative_prompt_2,
                device=device,
                num_images_per_prompt=1,
                max_sequence_length=tokens,
            )
            negative = {"encoder_hidden_states": negative_embeds, "pooled_projections": negative_pooled}
        _, _, rows, columns = self.latent_shape(pipe, *image_size)
        image_ids = FluxPipeline._prepare_latent_image_ids(
            1, rows // PACKING, columns // PACKING, device, embeds.dtype
        )
        return Conditioning(
            self,
            {"encoder_hidden_states": embeds, "pooled_projections": pooled},
            negative,
            true_cfg_scale if guided else 1.0,
            tuple(image_size),
            # the same for both branches: both prompts are padded to the same token count
            extra={"txt_ids": text_ids, "img_ids": image_ids, "guidance": float(guidance_scale)},
        )

    def denoise(self, model, latent, t, inputs: dict[str, Any], cond: Conditioning):
        """Pack the (band of the) latent, run the transformer as FluxPipeline does, unpack its output."""
        import torch
        from diffusers import FluxPipeline

        batch, channels, rows, columns = latent.shape
        packed = FluxPipeline._pack_latents(latent, batch, channels, rows, columns)
        timestep = t.expand(batch).to(latent.dtype)
        guidance = None
        if model.config.guidance_embeds:
            guidance = torch.full([1], cond.extra["guidance"], device=latent.device, dtype=torch.float32)
            guidance = guidance.expand(batch)
        output = model(
            hidden_states=packed,
            timestep=timestep / 1000,
            guidance=guidance,
            txt_ids=cond.extra["txt_ids"],
            img_ids=cond.extra["img_ids"],
            joint_attention_kwargs={},
            return_dict=False,
            **inputs,
        )[0]
        # _unpack_latents takes pixel sizes and the VAE factor: with a factor of 1 they are latent rows and columns
        return FluxPipeline._unpack_latents(output, rows, columns, 1)

    def patch_plan(self, model, config):
        from pipelines.families.flux.patch import flux_patch_plan

        return flux_patch_plan(model, config)


FLUX = FluxFamily()
