"""The PixArt family: ``PixArtAlphaPipeline`` and ``PixArtSigmaPipeline`` (PixArtTransformer2DModel, T5).

The prompt goes through the pipeline's own ``encode_prompt`` (T5 embeddings with their attention
masks); the transformer is called as the pipeline calls it (one timestep per sample, PixArt-alpha
1024's resolution and aspect-ratio micro-conditions); a model with learned sigma predicts noise and
variance, of which the sampler takes the noise. Bands are runs of whole patch rows (``patch``).

A job renders at the size it asks for, as the pipelines do with ``use_resolution_binning=False``; their default
renders at the trained aspect ratio nearest to it and resizes the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.errors import ModelDirectoryError
from pipelines.families.base import (
    Conditioning,
    ModelFamily,
    call_default,
    call_option,
    without_learned_sigma,
)

PATCH_DENOISERS = ("PixArtTransformer2DModel",)
"""Transformers the patch plan is written for (DiTTransformer2DModel's forward unpatchifies a square grid only)."""


class PixArtFamily(ModelFamily):
    name = "pixart"
    encode_options = ("max_sequence_length",)
    job = "image"
    pipelines = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    call_guidance = {"PixArtAlphaPipeline": (4.5, 1.0), "PixArtSigmaPipeline": (4.5, 1.0)}
    denoiser = "transformer"
    denoisers = ("PixArtTransformer2DModel", "DiTTransformer2DModel")
    samplers = ("pipeline", "ddim", "euler", "dpm++")
    strategies = ("none", "patch")
    cache_modes = ("none", "first-block", "teacache", "taylorseer")
    compiled_blocks = ("BasicTransformerBlock",)

    def plan_error(self, strategy: str, path: str | Path) -> str | None:
        if strategy == "patch":
            denoiser = self.component_config(path, "transformer").get("_class_name")
            if denoiser not in PATCH_DENOISERS:
                return (
                    f"the pixart family's patch plan runs {', '.join(PATCH_DENOISERS)}; "
                    f"{Path(path) / 'transformer'} is a {denoiser}"
                )
        return super().plan_error(strategy, path)

    def band_alignment(self, path: str | Path) -> int:
        return int(self.component_config(path, "transformer").get("patch_size", 1))

    def check_dir(self, path: Path, index: dict) -> None:
        """A PixArt-Sigma transformer that wants the resolution micro-conditions (``use_additional_conditions``,
        unset at sample size 128): ``PixArtSigmaPipeline`` passes none, so diffusers cannot render it either."""
        config = self.component_config(path, "transformer")
        wants = config.get("use_additional_conditions")
        if wants is None:
            wants = config.get("sample_size") == 128
        if index.get("_class_name") == "PixArtSigmaPipeline" and wants:
            raise ModelDirectoryError(
                f"{path}: its transformer takes resolution and aspect-ratio conditions (use_additional_conditions), "
                "which PixArtSigmaPipeline never passes"
            )

    def size_error(self, path: str | Path, height: int, width: int) -> tuple[str, str] | None:
        """Whole patches of latent pixels: the pipeline's ``check_inputs`` asks only for multiples of 8, and other
        sizes fail in the transformer's patch embedding or the scheduler's step."""
        patch = int(self.component_config(path, "transformer").get("patch_size", 1))
        return self.whole_units_error(
            path, height, width, self.latent_factor(path), patch, f"the transformer's patch size {patch}"
        )

    def encode(
        self, pipe, prompt, negative_prompt, guidance_scale, device, image_size=None, max_sequence_length=None
    ) -> Conditioning:
        guided = guidance_scale > 1.0
        positive, mask, negative, negative_mask = pipe.encode_prompt(
            prompt=prompt,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt,
            device=device,
            # as __call__ passes them: it cleans captions (where bs4 and ftfy are installed), encode_prompt's own
            # default does not
            clean_caption=call_default(pipe, "clean_caption"),
            max_sequence_length=call_option(pipe, "max_sequence_length", max_sequence_length),
        )
        return Conditioning(
            self,
            {"encoder_hidden_states": positive, "encoder_attention_mask": mask},
            {"encoder_hidden_states": negative, "encoder_attention_mask": negative_mask} if guided else None,
            guidance_scale,
            image_size,
        )

    def denoise(self, model, latent, t, inputs: dict[str, Any], cond: Conditioning):
        import torch

        batch = latent.shape[0]
        timestep = (t[None] if t.dim() == 0 else t).to(latent.device).expand(batch)
        dtype = inputs["encoder_hidden_states"].dtype
        added = {"resolution": None, "aspect_ratio": None}
        if model.config.sample_size == 128 and cond.image_size is not None:  # PixArt-alpha 1024's micro-conditions
            height, width = cond.image_size
            added = {
                "resolution": torch.tensor([height, width]).repeat(batch, 1).to(dtype),
                "aspect_ratio": torch.tensor([float(height / width)]).repeat(batch, 1).to(dtype),
            }
        return model(latent, timestep=timestep, added_cond_kwargs=added, **inputs, return_dict=False)[0]

    def noise(self, model, output):
        return without_learned_sigma(model, output)

    def patch_plan(self, model, config):
        from pipelines.families.pixart.patch import pixart_patch_plan

        return pixart_patch_plan(model)


PIXART = PixArtFamily()
