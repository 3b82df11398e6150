"""The render job spec: the one shape the CLI (through Hydra) and the Python API both build.

Validation happens before any worker starts; every error names the offending field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cluster.errors import SpecError
from parallel.patch.bands import band_bounds
from parallel.patch.config import KV_SOURCES, STALE_DTYPES
from pipelines.builtin import resolve_model
from pipelines.errors import ModelDirectoryError
from pipelines.families import ModelFamily, denoiser_classes, family_for_dir
from pipelines.loading import DTYPES
from pipelines.samplers import SAMPLERS

STRATEGIES = ("none", "patch")
PATCH_MODES = ("sync", "displaced")
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192
MAX_STEPS = 1000
LATENT_FACTOR = 8
AUTO = "auto"


@dataclass
class ParallelSpec:
    strategy: str = "none"
    """"none" (one worker runs the whole loop) or "patch" (the latent split in row bands, one per worker)."""
    degree: int | str = 1
    """Workers the strategy spreads one render over (with cfg, 2 x the patch workers); "auto": the
    scheduler picks it per segment from the image size and the free workers."""
    mode: str = "sync"
    """Patch exchange: "sync" (fresh every step, exact) or "displaced" (previous step's, overlapped)."""
    warmup_steps: int = 2
    """Synchronous steps before displaced mode starts using stale activations."""
    stale_dtype: str | None = None
    """Displaced mode: "float16" or "bfloat16" sends and keeps the stale activations in that precision
    (half the bytes and half the memory held between steps); None keeps the model's dtype."""
    kv_source: str = "kv"
    """What self-attention exchanges: "kv" (each band's keys and values) or "input" (each band's attention
    input, projected to K/V by every band: half the K/V bytes and stale memory for a little more compute)."""
    cfg: bool = False
    """CFG parallel: conditional and unconditional branches on different halves of the workers."""

    @property
    def auto(self) -> bool:
        return self.degree == AUTO

    @property
    def patch_workers(self) -> int:
        if self.auto:
            raise ValueError("parallel.degree is 'auto': the scheduler has not placed the job yet")
        return self.degree // 2 if self.cfg else self.degree


@dataclass
class SegmentSpec:
    """A run of consecutive steps on one model (Hybrid SD: a large model early, a small one late).

    Every segment's model must share the latent space (same VAE latent channels and scale); the
    scheduler may place each segment on a different worker group."""

    steps: int
    """Denoising steps in this segment; the segments' steps add up to the job's."""
    model: str = ""
    """Built-in model name or local pipeline directory for these steps; "" keeps the job's model."""
    device: str = ""
    """Which workers run these steps: a pool's name or a device kind; "" keeps the job's `device`."""


@dataclass
class RenderSpec:
    model: str = "builtin-image"
    """Built-in model name or a local diffusers pipeline directory."""
    dtype: str = "float32"
    """Weights and activations dtype."""
    prompt: str = "blue and yellow vertical stripes"
    """Text prompt."""
    negative_prompt: str = ""
    """Negative prompt, "" for none."""
    height: int = 512
    """Image height in pixels, a multiple of 8."""
    width: int = 512
    """Image width in pixels, a multiple of 8."""
    steps: int = 20
    """Denoising steps."""
    seed: int = 0
    """Seed of the initial noise."""
    guidance_scale: float = 5.0
    """Classifier-free guidance weight; <= 1 turns guidance off."""
    sampler: str = "ddim"
    """"ddim", "euler" or "dpm++"."""
    output_dir: str = "outputs"
    """Root under which outputs/<job-id>/ is written."""
    device: str = ""
    """Which workers may run the job: "" any; a pool's name (e.g. "h100"); or a device kind ("cpu", "cuda")."""
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    """How the render is spread over workers."""
    segments: list[SegmentSpec] = field(default_factory=list)
    """Empty: all steps on `model`. Otherwise the steps split in runs, each on its own model."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderSpec:
        """Build and validate a spec from plain data (a dict of the same fields)."""
        values, parallel = spec_fields(data, cls, ParallelSpec)
        segments = values.pop("segments", [])
        spec = cls(**values, parallel=ParallelSpec(**parallel), segments=_segments_from_data(segments))
        spec.validate()
        return spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        _check_type("model", self.model, str)
        _check_type("dtype", self.dtype, str)
        _check_type("prompt", self.prompt, str)
        _check_type("negative_prompt", self.negative_prompt, str)
        _check_type("sampler", self.sampler, str)
        _check_type("output_dir", self.output_dir, str)
        _check_type("device", self.device, str)
        for name in ("height", "width", "steps", "seed"):
            _check_type(name, getattr(self, name), int)
        _check_type("guidance_scale", self.guidance_scale, (int, float))
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % LATENT_FACTOR:
                raise SpecError(name, f"must be a positive multiple of {LATENT_FACTOR}, got {value}")
            if value > MAX_SIDE:
                raise SpecError(name, f"{value} exceeds the largest supported side {MAX_SIDE}")
        if self.height * self.width > MAX_PIXELS:
            raise SpecError("height", f"{self.height}x{self.width} exceeds {MAX_PIXELS} pixels")
        if not 1 <= self.steps <= MAX_STEPS:
            raise SpecError("steps", f"must be between 1 and {MAX_STEPS}, got {self.steps}")
        if not 0 <= self.seed < 2**63:
            raise SpecError("seed", f"must be in [0, 2**63), got {self.seed}")
        if not 0 <= self.guidance_scale <= 100:
            raise SpecError("guidance_scale", f"must be in [0, 100], got {self.guidance_scale}")
        if self.dtype not in DTYPES:
            raise SpecError("dtype", f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")
        if self.sampler not in SAMPLERS:
            raise SpecError(
                "sampler", f"unknown sampler {self.sampler!r}; expected one of {sorted(SAMPLERS)}"
            )
        if not self.model.strip():
            raise SpecError("model", "must name a built-in model or a local directory")
        if not self.output_dir.strip():
            raise SpecError("output_dir", "must not be empty")
        if ".." in Path(self.output_dir).parts:
            raise SpecError("output_dir", f"{self.output_dir!r} must not climb out with '..'")
        family = job_family("model", self.model)
        if self.sampler not in family.samplers:
            raise SpecError(
                "sampler",
                f"{self.sampler!r} does not fit the {family.name} family's models; use one of {list(family.samplers)}",
            )
        self._validate_segments()
        self._validate_parallel()

    def _validate_parallel(self) -> None:
        par = self.parallel
        _check_type("parallel.strategy", par.strategy, str)
        if par.degree != AUTO:
            _check_type("parallel.degree", par.degree, int)
        _check_type("parallel.mode", par.mode, str)
        _check_type("parallel.warmup_steps", par.warmup_steps, int)
        _check_type("parallel.cfg", par.cfg, bool)
        if par.stale_dtype is not None:
            _check_type("parallel.stale_dtype", par.stale_dtype, str)
            if par.stale_dtype not in STALE_DTYPES:
                raise SpecError(
                    "parallel.stale_dtype",
                    f"unknown dtype {par.stale_dtype!r}; expected one of {sorted(STALE_DTYPES)} or null",
                )
        _check_type("parallel.kv_source", par.kv_source, str)
        if par.kv_source not in KV_SOURCES:
            raise SpecError(
                "parallel.kv_source", f"unknown source {par.kv_source!r}; expected one of {KV_SOURCES}"
            )
        if par.strategy not in STRATEGIES:
            raise SpecError(
                "parallel.strategy", f"unknown strategy {par.strategy!r}; expected one of {STRATEGIES}"
            )
        if par.auto and par.strategy != "patch":
            raise SpecError("parallel.degree", "'auto' picks a patch degree; use parallel.strategy=patch")
        if par.auto and par.cfg:
            raise SpecError(
                "parallel.cfg", "degree 'auto' picks patch bands only; give an even degree for CFG"
            )
        if not par.auto and par.degree < 1:
            raise SpecError("parallel.degree", f"must be at least 1, got {par.degree}")
        if par.mode not in PATCH_MODES:
            raise SpecError("parallel.mode", f"unknown mode {par.mode!r}; expected one of {PATCH_MODES}")
        if par.warmup_steps < 0:
            raise SpecError("parallel.warmup_steps", f"must be >= 0, got {par.warmup_steps}")
        if par.strategy == "none":
            if par.degree != 1 or par.cfg:
                raise SpecError(
                    "parallel.degree", "strategy 'none' runs on exactly one worker; use parallel=patch"
                )
            return
        if par.cfg and par.degree % 2:
            raise SpecError(
                "parallel.degree", f"CFG parallel needs an even worker count (2 x bands), got {par.degree}"
            )
        if par.cfg and self.guidance_scale <= 1.0:
            raise SpecError(
                "parallel.cfg", f"CFG parallel needs guidance_scale > 1, got {self.guidance_scale}"
            )
        for model in self.segment_models():
            path = resolve_model(model)
            family = job_family("model", model)
            problem = family.plan_error(par.strategy, path)
            if problem is not None:
                raise SpecError("parallel.strategy", problem)
            align = family.band_alignment(path)
            if par.auto:
                continue  # the scheduler only picks degrees whose bands fit
            try:
                band_bounds(self.height // LATENT_FACTOR, par.patch_workers, align)
            except ValueError as err:
                raise SpecError(
                    "parallel.degree",
                    f"height {self.height}px is too short for {par.patch_workers} bands: {err}",
                ) from err

    def _validate_segments(self) -> None:
        if not self.segments:
            return
        latent = job_family("model", self.model).latent_space(self.model_path())
        for i, segment in enumerate(self.segments):
            name = f"segments[{i}]"
            _check_type(f"{name}.steps", segment.steps, int)
            _check_type(f"{name}.model", segment.model, str)
            _check_type(f"{name}.device", segment.device, str)
            if segment.steps < 1:
                raise SpecError(f"{name}.steps", f"must be at least 1, got {segment.steps}")
            if segment.model:
                family = job_family(f"{name}.model", segment.model)
                other = family.latent_space(resolve_model(segment.model))
                if other != latent:
                    raise SpecError(
                        f"{name}.model",
                        f"latent space {other} differs from the job model's {latent}: segments must share a VAE",
                    )
        total = sum(segment.steps for segment in self.segments)
        if total != self.steps:
            raise SpecError("segments", f"the segments' steps add up to {total}, but steps is {self.steps}")

    def model_path(self) -> str:
        return str(resolve_model(self.model))

    def segment_models(self) -> list[str]:
        """Every model the job runs (the job's own when there are no segments)."""
        return [s.model or self.model for s in self.segments] or [self.model]

    def segment_at(self, step: int) -> tuple[str, int]:
        """(model, last step + 1) of the segment that runs step `step` (0-based)."""
        end = 0
        for segment in self.segments:
            end += segment.steps
            if step < end:
                return segment.model or self.model, end
        return self.model, self.steps

    def segment_device(self, step: int) -> str:
        """The `device` request of the segment that runs step `step` (0-based)."""
        end = 0
        for segment in self.segments:
            end += segment.steps
            if step < end:
                return segment.device or self.device
        return self.device

    def device_requests(self) -> dict[str, str]:
        """Field name -> device request, for every segment (the job's own when there are none)."""
        named = {f"segments[{i}].device": s.device for i, s in enumerate(self.segments) if s.device}
        if not self.segments or len(named) < len(self.segments):
            named["device"] = self.device
        return named

    def placed(self, model: str, degree: int) -> RenderSpec:
        """This spec as one segment runs it: that segment's model, a concrete degree (1: no patches)."""
        par = self.parallel
        strategy = "none" if par.auto and degree == 1 else par.strategy
        parallel = replace(par, strategy=strategy, degree=degree)
        return RenderSpec(**{**self.__dict__, "model": model, "parallel": parallel, "segments": []})

    def check_fits(self, pool_workers: int) -> None:
        """Refuse a spec that asks for more workers than the pool has."""
        if self.parallel.auto:
            return
        if self.parallel.degree > pool_workers:
            raise SpecError(
                "parallel.degree", f"degree {self.parallel.degree} exceeds the pool's {pool_workers} workers"
            )


def check_known(name: str, data: dict, cls: type, hidden: frozenset[str] = frozenset()) -> None:
    """Refuse the first key of `data` that is not a field of dataclass `cls`; `name` prefixes the field."""
    known = {f.name for f in fields(cls)} - hidden
    for key in sorted(data):
        if key not in known:
            raise SpecError(f"{name}{key}", f"unknown field; known fields are {sorted(known)}")


def spec_fields(
    data: Any, spec_cls: type, parallel_cls: type, hidden: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job spec's plain data checked for unknown fields: (its fields but "parallel", the parallel
    mapping). Shared by the image and video specs; `hidden` fields cannot be set from outside."""
    if not isinstance(data, dict):
        raise SpecError("spec", f"expected a mapping of fields, got {type(data).__name__}")
    check_known("", data, spec_cls, hidden)
    values = dict(data)
    parallel = values.pop("parallel", {})
    if isinstance(parallel, parallel_cls):
        parallel = asdict(parallel)
    if not isinstance(parallel, dict):
        raise SpecError("parallel", f"expected a mapping, got {type(parallel).__name__}")
    check_known("parallel.", parallel, parallel_cls)
    return values, parallel


def _segments_from_data(data: Any) -> list[SegmentSpec]:
    if not isinstance(data, list):
        raise SpecError(
            "segments", f"expected a list of {{steps, model}} mappings, got {type(data).__name__}"
        )
    segments = []
    for i, item in enumerate(data):
        if isinstance(item, SegmentSpec):
            item = asdict(item)
        if not isinstance(item, dict):
            raise SpecError(f"segments[{i}]", f"expected a mapping, got {type(item).__name__}")
        check_known(f"segments[{i}].", item, SegmentSpec)
        if "steps" not in item:
            raise SpecError(f"segments[{i}].steps", "missing: every segment says how many steps it runs")
        segments.append(SegmentSpec(**item))
    return segments


def job_family(field_name: str, model: str, job: str = "image") -> ModelFamily:
    """The model family of a ``job`` kind's model (a built-in name or a directory); SpecError naming
    ``field_name`` when the directory is bad, no family serves it, or its family renders another kind."""
    try:
        path = resolve_model(model)
        family = family_for_dir(path)
    except ModelDirectoryError as err:
        raise SpecError(field_name, str(err)) from err
    if family.job != job:
        raise SpecError(
            field_name,
            f"{path} is {family.job} pipeline ({family.name} family), not {job} pipeline: "
            f"its denoiser must be a {' or '.join(denoiser_classes(job))}",
        )
    return family


def _check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    # bool is an int in Python; a spec saying height=true is wrong, not 1
    wants_bool = expected is bool
    if (isinstance(value, bool) and not wants_bool) or not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise SpecError(name, f"expected {names}, got {type(value).__name__} {value!r}")
