"""The video render job spec (`tessera render job=video ...`), validated before any worker starts.

Every error names its field. A frame count that is not a multiple of the block size is rounded up to
the next multiple; the note saying to what is kept in ``notes`` and printed by the CLI.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.spec import AUTO, MAX_STEPS, SpecError, _check_type, job_family, spec_fields
from parallel.frames.schedule import split_frames
from pipelines.builtin import resolve_model
from pipelines.families import ModelFamily
from pipelines.loading import DTYPES

VIDEO_STRATEGIES = ("none", "frames")
MAX_FRAMES = 1_000_000
MAX_SIDE = 4096


@dataclass
class VideoParallelSpec:
    strategy: str = "frames"
    """"frames" (layer-and-frame pipelining, one stage per worker) or "none" (one worker)."""
    degree: int | str = 2
    """Pipeline stages, one worker each; "auto": as many as are free when the job is placed (up to the
    model's transformer blocks and the video's frame blocks), chosen anew when a paused job resumes."""

    @property
    def auto(self) -> bool:
        return self.degree == AUTO


@dataclass
class VideoSpec:
    model: str = "builtin-video"
    """Built-in video model name or a local video pipeline directory."""
    dtype: str = "float32"
    """Weights and activations dtype."""
    prompt: str = "blue and yellow vertical stripes"
    """Text prompt."""
    negative_prompt: str = ""
    """Negative prompt of the unconditional branch, "" for none; used when guidance_scale > 1."""
    guidance_scale: float = 1.0
    """Classifier-free guidance weight; > 1 runs both branches (batched through the stages), <= 1 turns it off."""
    height: int = 64
    """Frame height in pixels (a multiple of 16: VAE factor x patch size)."""
    width: int = 64
    """Frame width in pixels (a multiple of 16)."""
    frames: int = 64
    """Video frames; rounded up to a multiple of block_frames."""
    block_frames: int = 8
    """Frames per frame block, the unit that moves through the queue."""
    context_frames: int = 1
    """Frames of each neighbour block a block attends to (feature cache); 0 <= it <= block_frames."""
    steps: int = 10
    """Denoising steps per block."""
    block_stride: int = 1
    """Steps between consecutive blocks entering the queue, 1 <= it <= steps: 1 is DualParal's queue; more
    starts a block once the previous one is that much cleaner (more motion to continue, fewer blocks in flight)."""
    seed: int = 0
    """Seed of the shared noise template."""
    fps: float = 8.0
    """Frame rate of the MP4."""
    output_dir: str = "outputs"
    """Root under which outputs/<job-id>/ is written."""
    device: str = ""
    """Which workers may run the job: "" any; a pool's name (e.g. "h100"); or a device kind ("cpu", "cuda")."""
    parallel: VideoParallelSpec = field(default_factory=VideoParallelSpec)
    """How the render is spread over workers."""
    notes: list[str] = field(default_factory=list)
    """Adjustments made while validating (e.g. the frame count rounded up); not an input."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoSpec:
        values, parallel = spec_fields(data, cls, VideoParallelSpec, hidden=frozenset({"notes"}))
        spec = cls(**values, parallel=VideoParallelSpec(**parallel))
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def blocks(self) -> int:
        return self.frames // self.block_frames

    def model_path(self) -> str:
        return str(resolve_model(self.model))

    def validate(self) -> None:
        for name in ("model", "dtype", "prompt", "negative_prompt", "output_dir", "device"):
            _check_type(name, getattr(self, name), str)
        for name in ("height", "width", "frames", "block_frames", "context_frames", "steps", "block_stride", "seed"):
            _check_type(name, getattr(self, name), int)
        _check_type("fps", self.fps, (int, float))
        _check_type("guidance_scale", self.guidance_scale, (int, float))
        _check_type("parallel.strategy", self.parallel.strategy, str)
        _check_type("parallel.degree", self.parallel.degree, (int, str))
        if self.dtype not in DTYPES:
            raise SpecError("dtype", f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % 16 or value > MAX_SIDE:
                raise SpecError(name, f"must be a positive multiple of 16 up to {MAX_SIDE}, got {value}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise SpecError("steps", f"must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not 1 <= self.block_stride <= self.steps:
            raise SpecError("block_stride", f"must be in [1, steps={self.steps}], got {self.block_stride}")
        if not 0 <= self.seed < 2**63:
            raise SpecError("seed", f"must be in [0, 2**63), got {self.seed}")
        if not 0 <= self.guidance_scale <= 100:
            raise SpecError("guidance_scale", f"must be in [0, 100], got {self.guidance_scale}")
        if not 0 < self.fps <= 240:
            raise SpecError("fps", f"must be in (0, 240], got {self.fps}")
        if not 1 <= self.block_frames <= 256:
            raise SpecError("block_frames", f"must be between 1 and 256, got {self.block_frames}")
        if not 0 <= self.context_frames <= self.block_frames:
            raise SpecError(
                "context_frames",
                f"must be in [0, block_frames={self.block_frames}], got {self.context_frames}",
            )
        if not 1 <= self.frames <= MAX_FRAMES:
            raise SpecError("frames", f"must be between 1 and {MAX_FRAMES}, got {self.frames}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.frames, _ = split_frames(self.frames, self.block_frames)
        self.notes.extend(str(w.message) for w in caught)
        if not self.output_dir.strip():
            raise SpecError("output_dir", "must not be empty")
        if ".." in Path(self.output_dir).parts:
            raise SpecError("output_dir", f"{self.output_dir!r} must not climb out with '..'")
        if not self.model.strip():
            raise SpecError("model", "must name a built-in video model or a local directory")
        family = job_family("model", self.model, "video")
        self._validate_parallel(family)

    def _validate_parallel(self, family: ModelFamily) -> None:
        par = self.parallel
        if par.strategy not in VIDEO_STRATEGIES:
            raise SpecError(
                "parallel.strategy", f"unknown strategy {par.strategy!r}; expected one of {VIDEO_STRATEGIES}"
            )
        if isinstance(par.degree, str) and not par.auto:
            raise SpecError("parallel.degree", f"expected a number of stages or 'auto', got {par.degree!r}")
        if par.strategy == "none" and par.degree != 1:
            raise SpecError(
                "parallel.degree", "strategy 'none' runs on exactly one worker; use parallel=frames"
            )
        problem = family.plan_error(par.strategy, self.model_path())
        if problem is not None:
            raise SpecError("parallel.strategy", problem)
        layers = family.max_stages(self.model_path())
        if par.auto:
            return
        if par.degree < 1:
            raise SpecError("parallel.degree", f"must be at least 1, got {par.degree}")
        if par.degree > layers:
            raise SpecError(
                "parallel.degree", f"{par.degree} stages exceed the model's {layers} transformer blocks"
            )
        if par.degree > self.blocks:
            raise SpecError(
                "parallel.degree",
                f"{par.degree} stages exceed the {self.blocks} frame blocks of frames={self.frames} with "
                f"block_frames={self.block_frames}; render more frames or use smaller blocks",
            )

    def max_stages(self) -> int:
        """The most stages this video can use: no more than transformer blocks or frame blocks."""
        return min(job_family("model", self.model, "video").max_stages(self.model_path()), self.blocks)

    def device_requests(self) -> dict[str, str]:
        """Field name -> device request (a video runs on one group to its end)."""
        return {"device": self.device}

    def check_fits(self, pool_workers: int) -> None:
        if not self.parallel.auto and self.parallel.degree > pool_workers:
            raise SpecError(
                "parallel.degree", f"degree {self.parallel.degree} exceeds the pool's {pool_workers} workers"
            )
