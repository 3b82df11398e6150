"""The Stable Diffusion family: ``StableDiffusionPipeline`` (UNet2DConditionModel, one CLIP text encoder).

The built-in image model (``builtin-image``) is one of it. Everything family-specific is here: the
prompt goes through the pipeline's own ``encode_prompt`` (called by keyword with its real signature),
the UNet takes the text embeddings as ``encoder_hidden_states``, bands align to its downsampling
(``patch``), and ``training`` holds its layer list for pipeline training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.families.base import Conditioning, ModelFamily


class StableDiffusionFamily(ModelFamily):
    name = "sd"
    job = "image"
    pipelines = ("StableDiffusionPipeline",)
    call_guidance = {"StableDiffusionPipeline": (7.5, 1.0)}
    denoiser = "unet"
    denoisers = ("UNet2DConditionModel",)
    samplers = ("pipeline", "ddim", "euler", "dpm++")
    strategies = ("none", "patch")
    cache_modes = ("none", "deepcache", "block-cache", "taylorseer")

    def guidance_embedded(self, path: str | Path) -> bool:
        """An LCM-distilled UNet (``time_cond_proj_dim`` set) takes the guidance weight as an input, and its
        pipeline then runs no negative branch (``do_classifier_free_guidance``)."""
        return self.component_config(path, "unet").get("time_cond_proj_dim") is not None

    def cache_error(self, path: str | Path, cache) -> tuple[str, str] | None:
        """DeepCache's ``branch`` must name one of the UNet's down blocks."""
        problem = super().cache_error(path, cache)
        blocks = len(self.component_config(path, "unet").get("down_block_types", ()))
        if problem is None and cache.mode == "deepcache" and cache.branch >= blocks:
            return "cache.branch", f"must be below the UNet's {blocks} down blocks, got {cache.branch}"
        return problem

    def band_alignment(self, path: str | Path) -> int:
        """2 ** (stride-2 downsamples): one per down block but the last, as diffusers builds them."""
        blocks = self.component_config(path, "unet").get("block_out_channels", [0])
        return 2 ** (len(blocks) - 1)

    def cost_model(self, path: str | Path, dtype: str):
        """A text-conditioned UNet from its config.json (without added conditioning)."""
        config = self.component_config(path, "unet")
        if config.get("addition_embed_type") is not None:
            return None
        return self.unet_cost_model(path, dtype, config, {})

    def unet_cost_model(self, path: str | Path, dtype: str, config: dict, extra: dict[str, int]):
        """The UNet of ``config`` for the cost model; ``extra``: the widths of its added conditioning inputs."""
        from parallel.cost.models import ModelSpec

        cross = config.get("cross_attention_dim")
        if not isinstance(cross, int):
            return None
        return ModelSpec(
            name=str(path),
            class_name=config["_class_name"],
            config={k: v for k, v in config.items() if not k.startswith("_")},
            kind="unet",
            latent_channels=config.get("in_channels", 4),
            text_dim=cross,
            dtype=dtype,
            extra=extra,
        )

    def encode(self, pipe, prompt, negative_prompt, guidance_scale, device, image_size=None) -> Conditioning:
        guided = guidance_scale > 1.0 and pipe.unet.config.time_cond_proj_dim is None
        positive, negative = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt or None,
        )
        return Conditioning(
            self,
            with_guidance_embedding({"encoder_hidden_states": positive}, pipe, guidance_scale),
            {"encoder_hidden_states": negative} if guided else None,
            guidance_scale if pipe.unet.config.time_cond_proj_dim is None else 1.0,
            image_size,
        )

    def denoise(self, model, latent, t, inputs: dict[str, Any], cond: Conditioning):
        return model(latent, t, **inputs, return_dict=False)[0]

    def training_layers(self, unet, text_encoder=None) -> list:
        """The UNet (after its text encoder) as the layer list pipeline training cuts into stages."""
        from pipelines.families.sd.training import unet_layers

        return unet_layers(unet, text_encoder)

    def patch_plan(self, model, config):
        from pipelines.families.sd.patch import unet_patch_plan

        return unet_patch_plan(model)


SD = StableDiffusionFamily()


def with_guidance_embedding(inputs: dict, pipe, guidance_scale: float) -> dict:
    """``inputs`` with the guidance weight as an LCM-distilled UNet (``time_cond_proj_dim``) takes it,
    ``timestep_cond``: the embedding of ``guidance_scale - 1`` that the SD and SDXL pipelines' ``__call__`` pass in
    place of a negative branch (their ``get_guidance_scale_embedding``), batch of one, on the prompt's device and
    dtype; ``inputs`` as they are for any other UNet."""
    dim = pipe.unet.config.time_cond_proj_dim
    if dim is None:
        return inputs
    import torch

    prompt = inputs["encoder_hidden_states"]
    embedded = pipe.get_guidance_scale_embedding(torch.tensor([guidance_scale - 1.0]), embedding_dim=dim)
    return {**inputs, "timestep_cond": embedded.to(device=prompt.device, dtype=prompt.dtype)}
