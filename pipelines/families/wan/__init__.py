"""The Wan family: ``WanPipeline`` / ``WanImageToVideoPipeline`` directories and the built-in video model.

The built-in ``builtin-video`` (model_index.json's ``TesseraVideoPipeline``) is a small Wan-layout DiT with
a per-frame VAE and a CLIP text encoder; a diffusers ``WanPipeline`` directory brings UMT5 and the causal
3-D ``AutoencoderKLWan`` (``loading``, ``decode``): Wan 2.1 text-to-video, Wan 2.2's two-expert A14B layout
(``experts``) and its TI2V-5B layout as text-to-video. ``WanImageToVideoPipeline`` (2.1 and 2.2 I2V) renders
from a conditioning ``image`` (``image``). Its plans: ``frames`` (the transformer cut into the pieces the frame
pipeline runs on its stages; every layout), ``sequence`` (the whole video as one sequence under diffusers'
context parallelism, the model's ``_cp_plan``: ``sequence``), ``patch`` (row bands of every frame of the whole
video: ``patch``, driven through the same whole-video forward; these two for every layout, each expert under
the plan on its own, ``whole_video_modules``) and
``training`` (the layer list for pipeline training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.families.base import ModelFamily


class WanFamily(ModelFamily):
    name = "wan"
    job = "video"
    pipelines = ("WanPipeline", "WanImageToVideoPipeline", "TesseraVideoPipeline")
    call_guidance = {  # TesseraVideoPipeline: (1.0, 1.0), the built-in model's
        "WanPipeline": (5.0, 1.0),
        "WanImageToVideoPipeline": (5.0, 1.0),
    }
    denoiser = "transformer"
    denoisers = ("WanTransformer3DModel",)
    samplers = ()  # a video renders with the scheduler its directory names (flow matching)
    strategies = ("none", "frames", "sequence", "patch")

    def check_dir(self, path: Path, index: dict) -> None:
        from pipelines.families.wan.loading import check_video_dir

        check_video_dir(path, index)

    def band_alignment(self, path: str | Path) -> int:
        return int(self.component_config(path, "transformer").get("patch_size", [1, 1, 1])[1])

    def max_stages(self, path: str | Path) -> int:
        """Frame-pipeline stages the model can be cut into: one transformer block each at most."""
        return int(self.component_config(path, "transformer").get("num_layers", 0))

    def decoded_frames(self, path: str | Path, spec: Any) -> int:
        """A latent frame per frame for the per-frame VAE; for Wan's causal VAE the first latent frame decodes to
        one frame (``loading.WanVideoPipeline.video_frames``)."""
        from pipelines.frame_counts import decoded_frame_count

        factor = self.temporal_factor(path)
        return decoded_frame_count(spec.frames // factor, factor)

    def temporal_factor(self, path: str | Path) -> int:
        """4 for Wan's causal 3-D VAE (its ``scale_factor_temporal``), 1 for the built-in per-frame VAE."""
        vae = self.component_config(path, "vae")
        if vae.get("_class_name") != "AutoencoderKLWan":
            return 1
        return int(vae.get("scale_factor_temporal", 4))

    def latent_factor(self, path: str | Path) -> int:
        """Pixels per latent row and column: the causal VAE's ``scale_factor_spatial``, else 2 per down block."""
        vae = self.component_config(path, "vae")
        if vae.get("_class_name") == "AutoencoderKLWan":
            return int(vae.get("scale_factor_spatial", 8))
        return 2 ** (len(vae.get("block_out_channels", [0])) - 1)

    def takes_sequence_length(self, path: str | Path) -> bool:
        """A diffusers Wan directory (``WanPipeline.encode_prompt``); not the built-in video model."""
        from pipelines.families.wan.loading import DIFFUSERS_PIPELINES

        return self._index(path).get("_class_name") in DIFFUSERS_PIPELINES

    def video_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """Whole latent frames per block (the default), and for the whole-video strategies at a fixed degree what
        splitting needs: ``sequence`` (diffusers' Ulysses over ``_cp_plan``) the attention heads and the video
        tokens each divided between the workers; ``patch`` a band of whole patch rows per worker. Height and width
        in whole patches of latent pixels (TI2V-5B's VAE takes 16 pixels per latent pixel, so 32 per patch)."""
        problem = super().video_error(path, spec) or self._size_error(path, spec)
        degree = spec.parallel.split_degree  # the workers of one forward (under CFG parallel, a branch's)
        if problem is not None or not isinstance(degree, int) or degree < 2:
            return problem
        from pipelines.families.wan.whole_checks import sequence_error

        if spec.parallel.strategy == "sequence":
            return sequence_error(self, path, spec, degree)
        if spec.parallel.strategy == "patch":
            return self.band_error(path, spec.height, degree)
        return None

    def cost_model(self, path: str | Path, dtype: str):
        """The transformer from its config.json as a "video-dit" (``parallel.cost``): its latent frames and size
        from the VAE's factors, its prompt at the length the pipeline encodes (WanPipeline's 512; the built-in
        model's tokenizer's)."""
        from parallel.cost.models import ModelSpec
        from pipelines.families.wan.loading import DIFFUSERS_PIPELINES, WAN_MAX_SEQUENCE_LENGTH

        config = self.component_config(path, "transformer")
        diffusers_pipeline = self._index(path).get("_class_name") in DIFFUSERS_PIPELINES
        length = WAN_MAX_SEQUENCE_LENGTH if diffusers_pipeline else self.tokenizer_limit(path, WAN_MAX_SEQUENCE_LENGTH)
        return ModelSpec(
            name=str(path),
            class_name=config["_class_name"],
            config={k: v for k, v in config.items() if not k.startswith("_")},
            kind="video-dit",
            latent_channels=int(config.get("in_channels", 16)),
            vae_scale=self.latent_factor(path),
            text_len=int(length),
            text_dim=int(config.get("text_dim", 4096)),
            temporal_scale=self.temporal_factor(path),
            dtype=dtype,
            **self.cost_video_decoder(path),
        )

    def takes_image(self, path: str | Path) -> bool:
        """A ``WanImageToVideoPipeline`` directory."""
        from pipelines.families.wan.loading import WAN_I2V_PIPELINE

        return self._index(path).get("_class_name") == WAN_I2V_PIPELINE

    def step_segments(self, path: str | Path, steps: int) -> list[int]:
        """A two-expert directory: the steps whose timestep is at or above ``boundary_ratio * num_train_timesteps``
        (the high-noise expert's) and the rest, from the scheduler its directory names (``experts``); [] when
        one expert would run them all."""
        from pipelines.families.wan.experts import expert_steps
        from pipelines.families.wan.loading import has_component

        index = self._index(path)
        if not has_component(index, "transformer_2"):
            return []
        high = expert_steps(path, index, steps)
        return [high, steps - high] if 0 < high < steps else []

    def has_second_guidance(self, path: str | Path) -> bool:
        """A two-expert directory: ``WanPipeline``'s ``guidance_scale_2`` weighs the low-noise expert's steps."""
        from pipelines.families.wan.loading import has_component

        return has_component(self._index(path), "transformer_2")

    def _size_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        vae = self.component_config(path, "vae")
        if vae.get("_class_name") != "AutoencoderKLWan":
            return None
        patch = int(self.component_config(path, "transformer").get("patch_size", [1, 2, 2])[1])
        factor = int(vae.get("scale_factor_spatial", 8)) * patch
        for name in ("height", "width"):
            if getattr(spec, name) % factor:
                value = getattr(spec, name)
                return name, f"this model takes multiples of {factor} pixels (VAE factor x patch size), got {value}"
        return None

    def whole_video_modules(self, model) -> list:
        """Both experts of a two-expert pipeline (each under its own plan), else the transformer."""
        from pipelines.families.wan.experts import WanExperts

        return list(model.experts) if isinstance(model, WanExperts) else [model]

    def _index(self, path: str | Path) -> dict:
        import json

        return json.loads((Path(path) / "model_index.json").read_text())

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.wan.loading import load_video_pipeline

        return load_video_pipeline(path, dtype, device)

    def frame_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``)."""
        from pipelines.families.wan.frames import WanFrameAdapter

        return WanFrameAdapter(model, block_shape, context_frames)

    def sequence_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int = 0):
        """The sequence plan: the model's own forward on the whole video, for diffusers' context parallelism to
        split (``pipelines.families.wan.sequence``)."""
        from pipelines.families.wan.sequence import WanSequenceAdapter

        return WanSequenceAdapter(model, block_shape, context_frames)

    def band_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int = 0):
        """The whole-video forward the patch plan (``patch_plan``) runs on a band of rows of every frame."""
        from pipelines.families.wan.sequence import WanSequenceAdapter

        return WanSequenceAdapter(model, block_shape, context_frames)

    def training_layers(self, model, text_encoder=None) -> list:
        from pipelines.families.wan.training import wan_layers

        return wan_layers(model, text_encoder)

    def patch_plan(self, model, config):
        from pipelines.families.wan.patch import wan_patch_plan

        return wan_patch_plan(model, config)


WAN = WanFamily()
