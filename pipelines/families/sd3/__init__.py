"""The Stable Diffusion 3 family: ``StableDiffusion3Pipeline`` (SD3 and SD3.5: an MMDiT ``SD3Transformer2DModel``
with joint text-image attention, two CLIP text encoders with projection and T5, flow matching).

Everything follows the pipeline's ``__call__``: the prompt goes through its own ``encode_prompt`` (by keyword,
``max_sequence_length`` at ``__call__``'s default), the transformer is called as ``__call__`` calls it (the
timestep expanded to the batch, the text embeddings and the pooled projections), the timesteps are set by
diffusers' own ``retrieve_timesteps`` (the scheduler's shift; ``mu`` from the pipeline's ``calculate_shift`` only
when the scheduler shifts dynamically), and the latent is decoded with SD3's ``latents / scaling_factor +
shift_factor``. Bands are runs of whole patch rows (``patch``).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pipelines.families.base import Conditioning, ModelFamily, call_option


class StableDiffusion3Family(ModelFamily):
    name = "sd3"
    encode_options = ("max_sequence_length", "prompt_2", "negative_prompt_2", "prompt_3", "negative_prompt_3")
    job = "image"
    pipelines = ("StableDiffusion3Pipeline",)
    call_guidance = {"StableDiffusion3Pipeline": (7.0, 1.0)}
    denoiser = "transformer"
    denoisers = ("SD3Transformer2DModel",)
    samplers = ("pipeline", "flow-euler")  # flow matching: the beta-schedule samplers do not fit
    strategies = ("none", "patch")
    cache_modes = ("none", "first-block", "teacache", "taylorseer")
    compiled_blocks = ("JointTransformerBlock",)

    def band_alignment(self, path: str | Path) -> int:
        """A band is whole patch rows."""
        return int(self.component_config(path, "transformer").get("patch_size", 2))

    def size_error(self, path: str | Path, height: int, width: int) -> tuple[str, str] | None:
        """The sizes ``__call__``'s ``check_inputs`` refuses (not whole patches of latent pixels), and those beyond
        the transformer's positional embedding (``pos_embed_max_size`` patches a side)."""
        transformer = self.component_config(path, "transformer")
        factor = 2 ** (len(self.component_config(path, "vae").get("block_out_channels", [0] * 4)) - 1)
        patch = int(transformer.get("patch_size", 2))
        problem = self.whole_units_error(path, height, width, factor, patch, f"the transformer's patch size {patch}")
        if problem is not None:
            return problem
        multiple = factor * patch
        limit = transformer.get("pos_embed_max_size")
        for name, pixels in (("height", height), ("width", width)):
            if limit and pixels // multiple > limit:
                return name, (
                    f"{pixels}px exceeds the {self.name} model's positional embedding at {path}: at most "
                    f"{limit * multiple}px ({limit} patches)"
                )
        return None

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer for the cost model, from its config.json ("mmdit": the latent image, joint attention):
        the text as ``encode_prompt`` makes it, CLIP's padded tokens (the tokenizer's ``model_max_length``, 77
        without one) then T5's ``max_sequence_length`` at ``__call__``'s default (zeros of that length without
        T5), the pooled projection, CFG batched."""
        from diffusers import StableDiffusion3Pipeline

        from parallel.cost.models import ModelSpec, with_defaults

        found = self.component_config(path, "transformer")
        if not found:
            return None
        config = with_defaults(found["_class_name"], found)
        clip = self.tokenizer_limit(path, 77)
        t5 = inspect.signature(StableDiffusion3Pipeline.__call__).parameters["max_sequence_length"].default
        vae = self.component_config(path, "vae")
        return ModelSpec(
            name=str(path),
            class_name=found["_class_name"],
            config=config,
            kind="mmdit",
            latent_channels=config["in_channels"],
            vae_scale=2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1),
            text_len=clip + t5,
            text_dim=config["joint_attention_dim"],
            dtype=dtype,
            vae_config=self.cost_decoder(path),
            extra={"pooled_projections": config["pooled_projection_dim"]},
        )

    def cost_prompt_tokens(self, path: str | Path, max_sequence_length: int | None) -> int | None:
        """The CLIP tokens before the job's T5 tokens in the joint attention."""
        if max_sequence_length is None:
            return None
        return self.tokenizer_limit(path, 77) + max_sequence_length

    def set_timesteps(self, pipe, scheduler, steps: int, latent_shape: tuple, device) -> None:
        """As ``__call__`` with no ``sigmas`` and no ``mu``: ``mu`` is computed only under dynamic shifting."""
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
            calculate_shift,
            retrieve_timesteps,
        )

        kwargs = {}
        config = scheduler.config
        if config.get("use_dynamic_shifting", None):
            patch = self.denoiser_of(pipe).config.patch_size
            image_seq_len = (latent_shape[2] // patch) * (latent_shape[3] // patch)
            kwargs["mu"] = calculate_shift(
                image_seq_len,
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        retrieve_timesteps(scheduler, steps, device, **kwargs)

    def decode(self, pipe, latents, tiled=None):
        from pipelines.sampling import vae_decode

        config = pipe.vae.config
        latents = latents.to(device=pipe.vae.device, dtype=pipe.vae.dtype)
        return vae_decode(pipe, (latents / config.scaling_factor) + config.shift_factor, tiled)

    def encode(
        self,
        pipe,
        prompt,
        negative_prompt,
        guidance_scale,
        device,
        image_size=None,
        max_sequence_length=None,
        prompt_2=None,
        negative_prompt_2=None,
        prompt_3=None,
        negative_prompt_3=None,
    ) -> Conditioning:
        """The three encoders' prompts (``prompt_2``: CLIP-G's, ``prompt_3``: T5's; None: ``prompt``), as
        ``StableDiffusion3Pipeline.encode_prompt`` takes them."""
        guided = guidance_scale > 1.0
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompt,
            prompt_2=prompt_2,
            prompt_3=prompt_3,
            negative_prompt=negative_prompt or None,
            negative_prompt_2=negative_prompt_2,
            negative_prompt_3=negative_prompt_3,
            do_classifier_free_guidance=guided,
            device=device,
            num_images_per_prompt=1,
            max_sequence_length=call_option(pipe, "max_sequence_length", max_sequence_length),
        )
        return Conditioning(
            self,
            {"encoder_hidden_states": positive, "pooled_projections": pooled},
            {"encoder_hidden_states": negative, "pooled_projections": negative_pooled} if guided else None,
            guidance_scale,
            image_size,
        )

    def denoise(self, model, latent, t, inputs: dict[str, Any], cond: Conditioning):
        timestep = t.expand(latent.shape[0])
        return model(
            hidden_states=latent, timestep=timestep, **inputs, joint_attention_kwargs=None, return_dict=False
        )[0]

    def patch_plan(self, model, config):
        from pipelines.families.sd3.patch import sd3_patch_plan

        return sd3_patch_plan(model)


SD3 = StableDiffusion3Family()
