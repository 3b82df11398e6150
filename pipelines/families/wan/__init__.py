"""The Wan family: ``WanPipeline`` directories (Wan 2.1 text-to-video) and the built-in video model.

The built-in ``builtin-video`` (model_index.json's ``TesseraVideoPipeline``) is a small Wan-layout DiT with
a per-frame VAE and a CLIP text encoder; a diffusers ``WanPipeline`` directory brings UMT5 and the causal
3-D ``AutoencoderKLWan`` (``loading``, ``decode``). Its plans: ``frames`` (the transformer cut into the
pieces the frame pipeline runs on its stages), ``patch`` (row bands of every frame) and ``training`` (the
layer list for pipeline training). Wan 2.2's two-expert and image-to-video pipelines are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.families.base import ModelFamily


class WanFamily(ModelFamily):
    name = "wan"
    job = "video"
    pipelines = ("WanPipeline", "TesseraVideoPipeline")
    denoiser = "transformer"
    denoisers = ("WanTransformer3DModel",)
    samplers = ()  # a video renders with the scheduler its directory names (flow matching)
    strategies = ("none", "frames", "patch")

    def check_dir(self, path: Path, index: dict) -> None:
        from pipelines.families.wan.loading import check_video_dir

        check_video_dir(path, index)

    def band_alignment(self, path: str | Path) -> int:
        return int(self.component_config(path, "transformer").get("patch_size", [1, 1, 1])[1])

    def max_stages(self, path: str | Path) -> int:
        """Frame-pipeline stages the model can be cut into: one transformer block each at most."""
        return int(self.component_config(path, "transformer").get("num_layers", 0))

    def temporal_factor(self, path: str | Path) -> int:
        """4 for Wan's causal 3-D VAE (its ``scale_factor_temporal``), 1 for the built-in per-frame VAE."""
        vae = self.component_config(path, "vae")
        if vae.get("_class_name") != "AutoencoderKLWan":
            return 1
        return int(vae.get("scale_factor_temporal", 4))

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.wan.loading import load_video_pipeline

        return load_video_pipeline(path, dtype, device)

    def frame_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``)."""
        from pipelines.families.wan.frames import WanFrameAdapter

        return WanFrameAdapter(model, block_shape, context_frames)

    def training_layers(self, model, text_encoder=None) -> list:
        from pipelines.families.wan.training import wan_layers

        return wan_layers(model, text_encoder)

    def patch_plan(self, model, config):
        from pipelines.families.wan.patch import wan_patch_plan

        return wan_patch_plan(model, config)


WAN = WanFamily()
