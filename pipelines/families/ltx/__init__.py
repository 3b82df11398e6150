"""The LTX-Video family: diffusers ``LTXPipeline`` directories (text-to-video).

A T5 text encoder, ``LTXVideoTransformer3DModel`` on packed latent tokens, the 3-D ``AutoencoderKLLTXVideo``
(8 frames and 32 pixels per latent; 8k+1 frames) and a flow-matching Euler sampler whose shift follows the
token count (``loading``). Its plans: ``frames`` (the transformer cut into the pieces the frame pipeline runs
on its stages, with the AdaLN modulation per block: ``frames``), the blocks decoded one by one (``decode``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.families.base import ModelFamily


class LTXFamily(ModelFamily):
    name = "ltx"
    job = "video"
    pipelines = ("LTXPipeline",)
    denoiser = "transformer"
    denoisers = ("LTXVideoTransformer3DModel",)
    samplers = ()  # a video renders with the scheduler its directory names (flow matching)
    strategies = ("none", "frames")

    def check_dir(self, path: Path, index: dict) -> None:
        from pipelines.families.ltx.loading import check_ltx_dir

        check_ltx_dir(path, index)

    def max_stages(self, path: str | Path) -> int:
        """Frame-pipeline stages the model can be cut into: one transformer block each at most."""
        return int(self.component_config(path, "transformer").get("num_layers", 0))

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.ltx.loading import load_ltx_pipeline

        return load_ltx_pipeline(path, dtype, device)

    def frame_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``) at LTXPipeline's default frame
        rate; a loaded pipeline's ``frame_adapter`` scales the rotary embedding by the render's."""
        from pipelines.families.ltx.frames import LTXFrameAdapter

        return LTXFrameAdapter(model, block_shape, context_frames)


LTX = LTXFamily()
