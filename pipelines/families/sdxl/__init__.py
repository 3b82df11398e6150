"""The Stable Diffusion XL family: ``StableDiffusionXLPipeline`` (two CLIP text encoders, a UNet with
pooled-text and time-id conditioning).

It is the Stable Diffusion family's UNet with more conditioning: the pipeline's own ``encode_prompt``
(called by keyword) gives both encoders' embeddings and the pooled one, and the UNet also takes
``added_cond_kwargs`` (the pooled text and the time ids of the image size, made by the pipeline's own
``_get_add_time_ids``, as its ``__call__`` does with no crop). Bands, samplers and the pipeline-training
layer list follow the UNet family's plans.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.families.base import Conditioning
from pipelines.families.sd import StableDiffusionFamily


class StableDiffusionXLFamily(StableDiffusionFamily):
    name = "sdxl"
    pipelines = ("StableDiffusionXLPipeline",)

    def encode(self, pipe, prompt, negative_prompt, guidance_scale, device, image_size=None) -> Conditioning:
        guided = guidance_scale > 1.0
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt or None,
        )
        if pipe.text_encoder_2 is None:
            projection = int(pooled.shape[-1])
        else:
            projection = pipe.text_encoder_2.config.projection_dim
        size = tuple(image_size)  # original and target size: the rendered one, no crop
        time_ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=positive.dtype, text_encoder_projection_dim=projection
        ).to(device)
        return Conditioning(
            self,
            {"encoder_hidden_states": positive, "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}},
            {
                "encoder_hidden_states": negative,
                "added_cond_kwargs": {"text_embeds": negative_pooled, "time_ids": time_ids},
            }
            if guided
            else None,
            guidance_scale,
            image_size,
        )

    def cost_model(self, path: str | Path, dtype: str):
        """The UNet with its added conditioning's widths (the pooled text, six time ids)."""
        pooled = self.component_config(path, "text_encoder_2").get("projection_dim")
        if not isinstance(pooled, int):
            return None
        config = self.component_config(path, "unet")
        return self.unet_cost_model(path, dtype, config, {"text_embeds": pooled, "time_ids": 6})


SDXL = StableDiffusionXLFamily()
