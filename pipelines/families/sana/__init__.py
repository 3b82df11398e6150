"""The Sana family: ``SanaPipeline`` (SanaTransformer2DModel with linear self-attention, a Gemma-2 text encoder,
the deep-compression autoencoder ``AutoencoderDC``, flow matching).

Everything follows ``SanaPipeline.__call__``: the prompt goes through the pipeline's own ``encode_prompt``,
by keyword, with ``__call__``'s own defaults for what it adds (``complex_human_instruction`` prepended to the
prompt, ``max_sequence_length``, ``clean_caption``), and comes back as Gemma embeddings with their attention
masks; the transformer is called as ``__call__`` calls it (the timestep times ``timestep_scale``, the encoder
attention mask, its output in float32); the latent is the DC-AE's (``vae_scale_factor``, 32x for Sana's),
decoded through it with its scaling factor. ``__call__``'s resolution binning (render at the nearest trained
aspect ratio, then resize) is not done: Tessera renders the size asked for, as ``use_resolution_binning=False``.

Samplers: the directory's own scheduler ("pipeline": Sana ships DPM-Solver++ with flow sigmas) by default, or
flow-matching Euler. The samplers for noise-prediction schedules (DDIM, Euler, and "dpm++", which is built
from the directory's config and would lose the flow settings of a directory whose scheduler is another
class) are refused. Bands are runs of whole patch rows (``patch``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.families.base import (
    Conditioning,
    ModelFamily,
    call_default,
    call_option,
    without_learned_sigma,
)

if TYPE_CHECKING:
    import torch

SIZE_MULTIPLE = 32
"""What ``SanaPipeline.check_inputs`` requires of the height and width, whatever the autoencoder."""


class SanaFamily(ModelFamily):
    name = "sana"
    encode_options = ("max_sequence_length", "complex_human_instruction")
    job = "image"
    pipelines = ("SanaPipeline",)
    call_guidance = {"SanaPipeline": (4.5, 1.0)}
    denoiser = "transformer"
    denoisers = ("SanaTransformer2DModel",)
    samplers = ("pipeline", "flow-euler")
    strategies = ("none", "patch")
    cache_modes = ("none", "first-block", "teacache", "taylorseer")
    compiled_blocks = ("SanaTransformerBlock",)

    def prepare_cache(self, model) -> None:
        """diffusers' block registry (what its cache hooks read of a block's outputs) lacks Sana's block, which
        takes and returns the image tokens alone."""
        from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

        for block_class in {type(block) for block in model.transformer_blocks}:
            try:
                TransformerBlockRegistry.get(block_class)
            except ValueError:
                TransformerBlockRegistry.register(block_class, TransformerBlockMetadata(return_hidden_states_index=0))

    # --- a pipeline directory, at submit: JSON only --------------------------------------------
    def plan_error(self, strategy: str, path: str | Path) -> str | None:
        if strategy == "patch":
            denoiser = self.component_config(path, "transformer").get("_class_name")
            if denoiser not in self.denoisers:
                return (
                    f"the sana family's patch plan runs {', '.join(self.denoisers)}; "
                    f"{Path(path) / 'transformer'} is a {denoiser}"
                )
        return super().plan_error(strategy, path)

    def band_alignment(self, path: str | Path) -> int:
        return int(self.component_config(path, "transformer").get("patch_size", 1))

    def vae_factor(self, path: str | Path) -> int:
        """The autoencoder's downsampling, as ``SanaPipeline`` computes its ``vae_scale_factor``."""
        stages = len(self.component_config(path, "vae").get("encoder_block_out_channels", [0] * 6))
        return 2 ** (stages - 1)

    def latent_factor(self, path: str | Path) -> int:
        return self.vae_factor(path)

    def size_error(self, path: str | Path, height: int, width: int) -> tuple[str, str] | None:
        """SanaPipeline's own input check (multiples of 32), and whole latent pixels of its autoencoder."""
        multiple = math.lcm(SIZE_MULTIPLE, self.vae_factor(path))
        for name, value in (("height", height), ("width", width)):
            if value % multiple:
                return name, f"must be a multiple of {multiple} for SanaPipeline ({Path(path).name}), got {value}"
        return None

    def latent_space(self, path: str | Path) -> tuple[int, int]:
        vae = self.component_config(path, "vae")
        return vae.get("latent_channels", 32), len(vae.get("encoder_block_out_channels", [0] * 6))

    # --- a loaded model, in a worker -----------------------------------------------------------
    def latent_shape(self, pipe: Any, height: int, width: int) -> tuple[int, int, int, int]:
        multiple = math.lcm(SIZE_MULTIPLE, pipe.vae_scale_factor)
        if height % multiple or width % multiple:
            raise ValueError(f"height/width: {height}x{width} must be multiples of {multiple} for SanaPipeline")
        return super().latent_shape(pipe, height, width)

    def encode(
        self,
        pipe,
        prompt,
        negative_prompt,
        guidance_scale,
        device,
        image_size=None,
        max_sequence_length=None,
        complex_human_instruction=None,
    ) -> Conditioning:
        guided = guidance_scale > 1.0
        positive, mask, negative, negative_mask = pipe.encode_prompt(
            prompt=prompt,
            do_classifier_free_guidance=guided,
            negative_prompt=negative_prompt,
            num_images_per_prompt=1,
            device=device,
            clean_caption=call_default(pipe, "clean_caption"),
            max_sequence_length=call_option(pipe, "max_sequence_length", max_sequence_length),
            complex_human_instruction=call_option(pipe, "complex_human_instruction", complex_human_instruction),
        )
        return Conditioning(
            self,
            {"encoder_hidden_states": positive, "encoder_attention_mask": mask},
            {"encoder_hidden_states": negative, "encoder_attention_mask": negative_mask} if guided else None,
            guidance_scale,
            image_size,
        )

    def latent_dtype(self, pipe) -> torch.dtype:
        """float32: ``SanaPipeline.__call__`` prepares its latents in float32 and upcasts the noise prediction, so
        they step in float32 under a bfloat16 transformer."""
        import torch

        return torch.float32

    def denoise(self, model, latent, t, inputs: dict[str, Any], cond: Conditioning):
        timestep = t.to(latent.device).expand(latent.shape[0]) * model.config.timestep_scale
        output = model(
            latent.to(dtype=model.dtype),
            encoder_hidden_states=inputs["encoder_hidden_states"].to(dtype=model.dtype),
            encoder_attention_mask=inputs["encoder_attention_mask"],
            timestep=timestep,
            return_dict=False,
        )[0]
        return output.float()

    def noise(self, model, output):
        return without_learned_sigma(model, output)

    def patch_plan(self, model, config):
        from pipelines.families.sana.patch import sana_patch_plan

        return sana_patch_plan(model)


SANA = SanaFamily()
