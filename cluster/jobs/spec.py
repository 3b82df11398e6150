"""What every job kind's spec shares: the common fields, their checks, and reading a spec from plain data.

A job is steps (or a video's queue ticks) over a checkpointable state, on a model of one family. Each
kind's spec (``cluster.jobs.image``, ``cluster.jobs.video``) extends ``JobSpec`` with its own fields and
checks. Validation happens once, at submit, before any worker starts; every error names its field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from cluster.errors import SpecError
from cluster.suggest import closest, shown
from pipelines.builtin import BUILTIN_MODELS, resolve_model
from pipelines.errors import ModelDirectoryError
from pipelines.families import ModelFamily, denoiser_classes, family_for_dir
from pipelines.loading import DTYPES

AUTO = "auto"
MAX_STEPS = 1000
MAX_TEXT = 100_000
"""Longest prompt, in characters: text encoders read a few hundred tokens; a longer one is a mistake."""
MAX_SEQUENCE_LENGTH = 4096
"""Most prompt tokens a job asks its text encoder for (``max_sequence_length``; the pipelines' defaults are 77 to
1024)."""
MAX_PATH = 4096
"""Longest path, in bytes, in a field that names a directory (Linux's PATH_MAX)."""
MAX_PATH_PART = 255
"""Longest part of such a path, in bytes (NAME_MAX): a longer name no file system holds."""
MAX_DEVICE = 128
"""Longest device request (a pool's name or a device kind)."""


@dataclass
class ParallelBase:
    """The parallel fields every kind has: which strategy, on how many workers."""

    strategy: str = "none"
    """The kind's strategies (``none``: one worker runs the whole job)."""
    degree: int | str = 1
    """Workers the strategy spreads one job over; "auto": the scheduler picks it when it places the job."""

    @property
    def auto(self) -> bool:
        return self.degree == AUTO


@dataclass
class SegmentResult:
    """What a segment of any kind hands back to the service."""

    metadata: dict[str, Any]
    """The kind's part of metadata.json (strategy, timings, traffic, per-worker memory...)."""
    checkpoint: dict | None = None
    """The state at the segment's end, when the job goes on in another segment."""
    output: Any = None
    """The kind's output to publish (an image), when the kind does not write its own (a video)."""
    latents: Any = None
    """The final latent (an image job's last segment), for a shadow re-check (``cluster.recheck``)."""


@dataclass
class JobSpec:
    """The fields and checks every job kind shares. Subclasses set ``kind`` and their own defaults."""

    kind: ClassVar[str] = ""
    """The job kind's name (``cluster.jobs.JOB_KINDS``); stored specs carry it in their "job" field."""
    models: ClassVar[str] = ""
    """Which models it renders: the ``job`` of their families ("image", "video"); a kind built on another
    kind's models (a variant of the image job) inherits its parent's."""
    unit: ClassVar[str] = "step"
    """What the job's progress and checkpoints count."""
    output_file: ClassVar[str] = ""
    """The file the job publishes in outputs/<job-id>/ (its outputs' key is the kind's name)."""
    hidden: ClassVar[frozenset[str]] = frozenset()
    """Fields that are not input (set while validating), refused from outside and not stored."""

    model: str = ""
    """Built-in model name or a local diffusers pipeline directory."""
    dtype: str = "float32"
    """Weights and activations dtype."""
    prompt: str = "blue and yellow vertical stripes"
    """Text prompt."""
    negative_prompt: str = ""
    """Negative prompt of the unconditional branch, "" for none."""
    height: int = 512
    """Height in pixels."""
    width: int = 512
    """Width in pixels."""
    steps: int = 20
    """Denoising steps."""
    seed: int = 0
    """Seed of the initial noise."""
    guidance_scale: float | None = None
    """Classifier-free guidance weight; <= 1 turns guidance off. None: the model's own default, set at validation
    (``fill_guidance``)."""
    output_dir: str = "outputs"
    """Root under which outputs/<job-id>/ is written."""
    device: str = ""
    """Which workers may run the job: "" any; a pool's name (e.g. "h100"); or a device kind ("cpu", "cuda")."""
    parallel: ParallelBase = field(default_factory=ParallelBase)
    """How the job is spread over workers."""

    @classmethod
    def parallel_class(cls) -> type:
        return next(f for f in fields(cls) if f.name == "parallel").default_factory

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build and validate a spec from plain data (a dict of the same fields)."""
        values, parallel = spec_fields(data, cls, cls.parallel_class(), cls.hidden, cls.other_kinds_fields)
        spec = cls(**cls.read_fields(values), parallel=cls.parallel_class()(**parallel))
        spec.validate()
        return spec

    @classmethod
    def other_kinds_fields(cls) -> dict[str, str]:
        """Fields (dotted) that other job kinds have and this one lacks -> the kind they belong to, so that a
        refusal can say which kind was meant (``frames`` on an image job)."""
        from cluster.jobs import JOB_KINDS

        mine = {f.name for f in fields(cls)} | {f"parallel.{f.name}" for f in fields(cls.parallel_class())}
        found: dict[str, str] = {}
        for kind in JOB_KINDS.values():
            other = kind.spec_class()
            if kind.name == cls.kind:
                continue
            names = [f.name for f in fields(other) if f.name not in other.hidden]
            names += [f"parallel.{f.name}" for f in fields(other.parallel_class())]
            for name in names:
                if name not in mine:
                    found.setdefault(name, kind.name)
        return found

    @classmethod
    def read_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The kind's own reading of nested fields (image segments); the plain values by default."""
        return values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def stored(self) -> dict[str, Any]:
        """What the job store keeps: the validated input fields, and the kind when it is not "image"
        (image jobs stored before job kinds existed read back unchanged)."""
        data = {k: v for k, v in self.to_dict().items() if k not in self.hidden}
        if self.kind != "image":
            data["job"] = self.kind
        return data

    def preview_latent(self, state: dict) -> Any:
        """The latent a preview shows, from a checkpoint state: (channels, rows, columns), or (channels, frames,
        rows, columns); None when the kind has none to show."""
        return None

    def model_path(self, model: str | None = None) -> str:
        """The directory of ``model`` (the job's own by default), as validation found it."""
        model = self.model if model is None else model
        known = self.__dict__.get("_models", {}).get(model)
        return known[0] if known is not None else str(resolve_model(model))

    def remember_model(self, field_name: str, model: str) -> ModelFamily:
        """Check a model of this job and keep what placing it needs (its directory, its family, the band
        alignment of families with a patch plan, its latent factor), so that the scheduler's polls read
        nothing from disk."""
        family = self.family(field_name, model)
        path = resolve_model(model)
        align = family.band_alignment(path) if "patch" in family.strategies else 1
        known = self.__dict__.setdefault("_models", {})
        known[model] = known[str(path)] = (str(path), family, align, family.latent_factor(path))  # name, dir
        return family

    def _known_model(self, model: str | None) -> tuple:
        """What validation kept of ``model`` (a name or directory of this job); a spec built by ``placed``
        rather than validated (the scheduler checks a candidate placement) reads it now."""
        model = self.model if model is None else model
        if model not in self.__dict__.get("_models", {}):
            self.remember_model("model", model)
        return self._models[model]

    def model_family(self, model: str | None = None) -> ModelFamily:
        """The family of ``model`` (a name or directory of this job), kept from validation."""
        return self._known_model(model)[1]

    def band_alignment(self, model: str | None = None) -> int:
        """Rows a patch band of ``model`` (a name or directory of this job) must be a multiple of."""
        return self._known_model(model)[2]

    def latent_rows(self, model: str | None = None) -> int:
        """Latent rows of this job's height on ``model`` (a name or directory of this job): what bands split."""
        return self.height // self._known_model(model)[3]

    def with_calibration(self, placed: JobSpec, calibrations: Any) -> JobSpec:
        """``placed`` with what earlier jobs learned for it (an image job's cache calibration); as is by default."""
        return placed

    def learned_calibration(self, placed: JobSpec, metadata: dict) -> tuple[str, dict] | None:
        """(key, value) a run learned that later jobs reuse (``with_calibration``); None by default."""
        return None

    def input_fields(self) -> dict[str, Any]:
        """The spec's fields as they are (not copied), to build a variant of it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validate(self) -> None:
        raise NotImplementedError

    def validate_common(self) -> None:
        """The checks every kind makes, in the order the kinds report them."""
        for name in ("model", "dtype", "prompt", "negative_prompt", "output_dir", "device"):
            check_type(name, getattr(self, name), str)
        for name in ("height", "width", "steps", "seed"):
            check_type(name, getattr(self, name), int)
        if self.guidance_scale is not None:
            check_type("guidance_scale", self.guidance_scale, (int, float))
        for name in ("prompt", "negative_prompt"):
            check_text(name, getattr(self, name))
        check_device("device", self.device)

    def check_steps(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            raise SpecError("steps", f"must be between 1 and {MAX_STEPS}, got {self.steps}")

    def check_seed_and_guidance(self) -> None:
        if not 0 <= self.seed < 2**63:
            raise SpecError("seed", f"must be in [0, 2**63), got {self.seed}")
        if self.guidance_scale is not None and not 0 <= self.guidance_scale <= 100:
            raise SpecError("guidance_scale", f"must be in [0, 100], got {self.guidance_scale}")

    def cfg_weight_field(self, model: str | None = None) -> str:
        """The field weighing the two guidance branches of ``model`` (the job's own by default)."""
        return "true_cfg_scale" if self.model_family(model).true_cfg else "guidance_scale"

    def guides(self, model: str | None = None) -> bool:
        """Whether ``model`` runs two guidance branches: its weight above 1 and, for a true-CFG family (Flux,
        Qwen-Image, HunyuanVideo), a negative prompt, as their pipelines run true CFG only with one."""
        if getattr(self, self.cfg_weight_field(model)) <= 1.0:
            return False
        family = self.model_family(model)
        if family.guidance_embedded(self.model_path(model)):  # an LCM UNet: the weight is an input
            return False
        return bool(self.negative_prompt) or not family.true_cfg

    def fill_guidance(self, family: ModelFamily, model: str | None = None) -> None:
        """Give the guidance weights the job leaves unset (None) the defaults of ``model`` (the job's own by
        default): its pipeline's ``__call__`` defaults, as ``ModelFamily.guidance_defaults`` reads them. Set once,
        at validation, so that the stored job holds the weight it renders with (a later diffusers cannot change a
        queued job)."""
        unset = [name for name in ("guidance_scale", "true_cfg_scale") if getattr(self, name, 0) is None]
        if not unset:  # a validated or placed spec: nothing to read
            return
        defaults = family.guidance_defaults(self.model_path(model))
        for name in unset:
            setattr(self, name, defaults[name])

    def check_dtype(self) -> None:
        if self.dtype not in DTYPES:
            raise SpecError("dtype", f"unknown dtype {self.dtype!r}; expected one of {sorted(DTYPES)}")

    def check_output_dir(self) -> None:
        if not self.output_dir.strip():
            raise SpecError("output_dir", "must not be empty")
        check_path("output_dir", self.output_dir)
        if ".." in Path(self.output_dir).parts:
            raise SpecError("output_dir", f"{shown(self.output_dir)} must not climb out with '..'")

    def family(self, field_name: str = "model", model: str | None = None) -> ModelFamily:
        """The model family of ``model`` (the job's own by default) for this kind; SpecError naming
        ``field_name`` when the directory is bad, no family serves it, or its family renders another kind."""
        model = self.model if model is None else model
        if not model.strip():
            raise SpecError(field_name, f"must name a built-in {self.kind} model or a local directory")
        if model not in BUILTIN_MODELS:
            check_path(field_name, model)
        try:
            path = resolve_model(model)
            family = family_for_dir(path)
        except ModelDirectoryError as err:
            raise SpecError(field_name, str(err)) from err
        except (OSError, ValueError, RuntimeError) as err:  # a path the system cannot look up (~nobody/...)
            reason = getattr(err, "strerror", None) or str(err)
            raise SpecError(field_name, f"{shown(model)} cannot be read: {reason}") from err
        if family.job != self.models:
            raise SpecError(
                field_name,
                f"{path} is {family.job} pipeline ({family.name} family), not {self.models} pipeline: "
                f"its denoiser must be a {' or '.join(denoiser_classes(self.models))}",
            )
        return family

    def check_plan(self, family: ModelFamily, model: str, strategies: tuple[str, ...]) -> None:
        """The strategy is one this kind runs and the model's family has a plan for."""
        strategy = self.parallel.strategy
        check_type("parallel.strategy", strategy, str)
        if strategy not in strategies:
            raise SpecError("parallel.strategy", f"unknown strategy {strategy!r}; expected one of {strategies}")
        problem = family.plan_error(strategy, resolve_model(model))
        if problem is not None:
            raise SpecError("parallel.strategy", problem)

    def device_requests(self) -> dict[str, str]:
        """Field name -> device request (the job's own; a kind with segments adds theirs)."""
        return {"device": self.device}

    def check_sampler_steps(self, model: str, sampler: str) -> None:
        """The sampler can take the job's steps on ``model``'s training schedule: where diffusers' scheduler would
        fail in the worker (DDIM with 1000 steps on a schedule with a steps offset), refuse up front."""
        problem = self.model_family(model).steps_error(self.model_path(model), sampler, self.steps)
        if problem is not None:
            raise SpecError("steps", problem)


def check_type(name: str, value: Any, expected: type | tuple[type, ...]) -> None:
    # bool is an int in Python; a spec saying height=true is wrong, not 1
    wants_bool = expected is bool
    if (isinstance(value, bool) and not wants_bool) or not isinstance(value, expected):
        names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
        raise SpecError(name, f"expected {names}, got {type(value).__name__} {shown(value)}")


def check_sequence_length(value: Any) -> None:
    """A job's ``max_sequence_length``: prompt tokens, from 1 to ``MAX_SEQUENCE_LENGTH``."""
    check_type("max_sequence_length", value, int)
    if not 1 <= value <= MAX_SEQUENCE_LENGTH:
        raise SpecError("max_sequence_length", f"must be between 1 and {MAX_SEQUENCE_LENGTH}, got {value}")


def check_text(name: str, value: str) -> None:
    """A prompt: any text, but text (no lone surrogates, which no encoder or file takes) of a sane length."""
    if len(value) > MAX_TEXT:
        raise SpecError(name, f"{len(value)} characters exceed the longest prompt taken ({MAX_TEXT})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise SpecError(name, f"is not valid Unicode text: {shown(value[err.start : err.end])} at character {err.start}") from err


def check_path(name: str, value: str) -> None:
    """A field naming a directory: printable characters only (no NUL, newline or other control character), at most
    ``MAX_PATH`` bytes, and no part longer than a file system allows."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise SpecError(name, f"{shown(value)} holds the control character {bad!r}")
    size = len(value.encode("utf-8"))
    if size > MAX_PATH:
        raise SpecError(name, f"is {size} bytes long; a path is at most {MAX_PATH}")
    longest = max((len(part.encode("utf-8")) for part in Path(value).parts), default=0)
    if longest > MAX_PATH_PART:
        raise SpecError(name, f"has a {longest}-byte name in it; a file name is at most {MAX_PATH_PART} bytes")


def check_device(name: str, value: str) -> None:
    """A device request ("" any, a pool's name, a device kind): a short printable name, whatever pools exist
    (which pool serves it is the controller's to say)."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise SpecError(name, f"{shown(value)} holds the control character {bad!r}; name a pool or a device kind")
    if len(value) > MAX_DEVICE:
        raise SpecError(name, f"{len(value)} characters exceed the longest pool name or device kind ({MAX_DEVICE})")


def unknown_field(name: str, known: Iterable[str], elsewhere: Mapping[str, str] | None = None) -> SpecError:
    """The refusal of ``name`` (dotted), not one of ``known`` (its level's fields): the job kind it belongs to
    when another kind has it (``elsewhere``: field -> kind), else the closest known field, else the known ones."""
    prefix, _, key = name.rpartition(".")
    prefix = f"{prefix}." if prefix else ""
    other = (elsewhere or {}).get(name)
    if other is not None:
        return SpecError(name, f"unknown field; {other} jobs have it (set job={other})")
    match = closest(key, known)
    if match is not None:
        return SpecError(name, f"unknown field; did you mean {prefix}{match}?")
    return SpecError(name, f"unknown field; known fields are {sorted(known)}")


def check_known(
    name: str,
    data: dict,
    cls: type,
    hidden: frozenset[str] = frozenset(),
    elsewhere: Callable[[], Mapping[str, str]] | None = None,
) -> None:
    """Refuse the first key of `data` that is not a field of dataclass `cls`; `name` prefixes the field.
    `elsewhere` gives the fields of other job kinds (dotted) -> their kind, asked only for a refusal."""
    known = {f.name for f in fields(cls)} - hidden
    for key in sorted(data, key=str):
        if not isinstance(key, str):
            raise SpecError(f"{name}{key}", f"field names are strings, got {type(key).__name__} {shown(key)}")
        if key in hidden:
            raise SpecError(f"{name}{key}", "not an input: it is set while the job is validated")
        if key not in known:
            raise unknown_field(f"{name}{key}", known, elsewhere() if elsewhere else None)


def spec_fields(
    data: Any,
    spec_cls: type,
    parallel_cls: type,
    hidden: frozenset[str] = frozenset(),
    elsewhere: Callable[[], Mapping[str, str]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job spec's plain data checked for unknown fields: (its fields but "parallel", the parallel
    mapping). `hidden` fields cannot be set from outside; `elsewhere` names other kinds' fields (check_known)."""
    if not isinstance(data, dict):
        raise SpecError("spec", f"expected a mapping of fields, got {type(data).__name__}")
    check_known("", data, spec_cls, hidden, elsewhere)
    values = dict(data)
    parallel = values.pop("parallel", {})
    if isinstance(parallel, parallel_cls):
        parallel = asdict(parallel)
    if not isinstance(parallel, dict):
        raise SpecError("parallel", f"expected a mapping, got {type(parallel).__name__}")
    check_known("parallel.", parallel, parallel_cls, elsewhere=elsewhere)
    return values, parallel
