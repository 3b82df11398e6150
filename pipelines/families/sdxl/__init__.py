"""The Stable Diffusion XL family: ``StableDiffusionXLPipeline`` (two CLIP text encoders, a UNet with
pooled-text and time-id conditioning) and its refiner, ``StableDiffusionXLImg2ImgPipeline``, which runs the
late steps of a job as a segment on the same latent (diffusers' "ensemble of expert denoisers").

It is the Stable Diffusion family's UNet with more conditioning: the pipeline's own ``encode_prompt``
(called by keyword) gives both encoders' embeddings and the pooled one, and the UNet also takes
``added_cond_kwargs`` (the pooled text and the time ids of the image size, made by the pipeline's own
``_get_add_time_ids``, as its ``__call__`` does with no crop). Bands, samplers and the pipeline-training
layer list follow the UNet family's plans. The refiner's time ids also carry the aesthetic scores of its
``__call__``'s defaults (it has only the second text encoder, which ``encode_prompt`` handles).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from pipelines.families.base import Conditioning
from pipelines.families.sd import StableDiffusionFamily, with_guidance_embedding


class StableDiffusionXLFamily(StableDiffusionFamily):
    name = "sdxl"
    pipelines = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")
    call_guidance = {"StableDiffusionXLPipeline": (5.0, 1.0), "StableDiffusionXLImg2ImgPipeline": (5.0, 1.0)}
    encode_options = ("prompt_2", "negative_prompt_2")

    def encode(
        self,
        pipe,
        prompt,
        negative_prompt,
        guidance_scale,
        device,
        image_size=None,
        prompt_2=None,
        negative_prompt_2=None,
    ) -> Conditioning:
        """Both CLIP encoders' prompts (``prompt_2``, ``negative_prompt_2``: the second's; None: the first's), as
        ``StableDiffusionXLPipeline.encode_prompt`` takes them."""
        embedded = pipe.unet.config.time_cond_proj_dim is not None  # an LCM UNet's weight, no negative branch
        guided = guidance_scale > 1.0 and not embedded
        positive, negative, pooled, negative_pooled = pipe.encode_prompt(
            prompt=prompt,
            prompt_2=prompt_2,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt or None,
            negative_prompt_2=negative_prompt_2,
        )
        if pipe.text_encoder_2 is None:
            projection = int(pooled.shape[-1])
        else:
            projection = pipe.text_encoder_2.config.projection_dim
        time_ids, negative_time_ids = self._time_ids(pipe, tuple(image_size), positive.dtype, projection)
        inputs = {
            "encoder_hidden_states": positive,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.to(device)},
        }
        return Conditioning(
            self,
            with_guidance_embedding(inputs, pipe, guidance_scale),
            {
                "encoder_hidden_states": negative,
                "added_cond_kwargs": {"text_embeds": negative_pooled, "time_ids": negative_time_ids.to(device)},
            }
            if guided
            else None,
            1.0 if embedded else guidance_scale,
            image_size,
        )

    @staticmethod
    def _time_ids(pipe, size: tuple[int, int], dtype, projection: int):
        """(prompt, negative prompt) time ids as the pipeline's ``__call__`` makes them with the rendered size as
        original and target size and no crop; a refiner's add the aesthetic scores its ``__call__`` defaults to."""
        call = inspect.signature(type(pipe).__call__).parameters
        if "aesthetic_score" not in inspect.signature(pipe._get_add_time_ids).parameters:
            ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=dtype, text_encoder_projection_dim=projection)
            return ids, ids
        return pipe._get_add_time_ids(
            size,
            (0, 0),
            size,
            call["aesthetic_score"].default,
            call["negative_aesthetic_score"].default,
            size,
            (0, 0),
            size,
            dtype=dtype,
            text_encoder_projection_dim=projection,
        )

    def cost_model(self, path: str | Path, dtype: str):
        """The UNet with its added conditioning's widths: the pooled text, and the time ids (six, or five with a
        refiner's aesthetic score) that fill the rest of its projection's input."""
        pooled = self.component_config(path, "text_encoder_2").get("projection_dim")
        config = self.component_config(path, "unet")
        projected, per_id = config.get("projection_class_embeddings_input_dim"), config.get("addition_time_embed_dim")
        if not all(isinstance(v, int) for v in (pooled, projected, per_id)):
            return None
        return self.unet_cost_model(path, dtype, config, {"text_embeds": pooled, "time_ids": (projected - pooled) // per_id})


SDXL = StableDiffusionXLFamily()
