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

    def temporal_factor(self, path: str | Path) -> int:
        """8: LTX-Video's VAE packs 8 video frames into one latent frame (read from its config)."""
        from pipelines.families.ltx.loading import vae_factors

        return vae_factors(self.component_config(path, "vae"))[0]

    def video_error(self, path: str | Path, spec: Any) -> tuple[str, str] | None:
        """Whole latent frames per block (the default), and a frame size of whole latent rows and columns
        (32 pixels each for LTX-Video's VAE)."""
        problem = super().video_error(path, spec)
        if problem is not None:
            return problem
        from pipelines.families.ltx.loading import vae_factors

        spatial = vae_factors(self.component_config(path, "vae"))[1]
        for name in ("height", "width"):
            value = getattr(spec, name)
            if value % spatial:
                return (
                    name,
                    f"this model's VAE maps {spatial} pixels to one latent; {name} must be a multiple of {spatial}, got {value}",
                )
        return None

    def load(self, path: str | Path, dtype: str, device: str) -> Any:
        from pipelines.families.ltx.loading import load_ltx_pipeline

        return load_ltx_pipeline(path, dtype, device)

    def frame_adapter(self, model, block_shape: tuple[int, int, int, int], context_frames: int):
        """The frame plan (``parallel.frames.adapter.FrameAdapterFactory``), its rotary embedding scaled as
        ``LTXPipeline.__call__`` scales it at its default ``frame_rate`` (25) for LTX-Video's VAE."""
        from pipelines.families.ltx.frames import LTXFrameAdapter

        return LTXFrameAdapter(model, block_shape, context_frames)


LTX = LTXFamily()
