"""Image jobs: the spec of a text-to-image render and how the service runs its segments.

An image job is denoising steps over a small state (latent, sampler, RNG). It may be split in
``segments`` on different models sharing a latent space (Hybrid SD) or on different pools; each segment
is placed anew, on a degree of its own. Patch parallelism (``parallel.strategy=patch``) splits the latent
in row bands, one per worker, and may split the two guidance branches too (``parallel.cfg``); sequence
parallelism (``parallel.strategy=sequence``) splits a DiT's token sequence with diffusers' own Ulysses and
Ring attention (``parallel.ring``), and composes with ``parallel.cfg`` the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cluster.errors import SpecError
from cluster.jobs.spec import (
    MAX_STEPS,
    JobSpec,
    ParallelBase,
    SegmentResult,
    check_device,
    check_known,
    check_sequence_length,
    check_text,
    check_type,
)
from parallel.cache.config import MODES as CACHE_MODES
from parallel.cache.config import CacheConfig
from parallel.patch.bands import too_short_for_bands
from parallel.patch.config import KV_SOURCES, STALE_DTYPES
from pipelines.builtin import resolve_model
from pipelines.families import ModelFamily
from runtime.jobs.strategies import IMAGE_STRATEGIES

STRATEGIES = (*IMAGE_STRATEGIES, "auto")
"""The runtime's strategies, and "auto": the scheduler picks one of them for each placement."""
PATCH_MODES = ("sync", "displaced")
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192
MAX_TAYLOR_ORDER = 3
"""cache.order: the highest Taylor order TaylorSeer is given (each needs one more full step of history)."""
LATENT_FACTOR = 8
PROMPTS = ("prompt_2", "negative_prompt_2", "prompt_3", "negative_prompt_3")
"""The prompts of a pipeline's second and third text encoders, each a family's ``encode_options`` where it takes it."""
ENCODE_OPTIONS = ("max_sequence_length", "complex_human_instruction", *PROMPTS)
"""The job's fields that are pipeline ``__call__`` arguments of prompt encoding (``RenderSpec.encode_options``)."""


@dataclass
class ParallelSpec(ParallelBase):
    strategy: str = "none"
    """"none" (one worker runs the whole loop), "patch" (the latent split in row bands, one per worker),
    "sequence" (diffusers' context parallelism: the model's token sequence split by Ulysses and Ring), "steps"
    (ParaStep: adjacent steps at once on different workers, only their noise exchanged; approximate) or
    "auto" (with degree "auto": for each placement, the scheduler picks the strategy, degree, CFG split and
    Ring degree the cost model predicts fastest among the model family's plans)."""
    degree: int | str = 1
    """Workers the strategy spreads one render over (with cfg, 2 x the patch workers); "auto": the
    scheduler picks it per segment from the image size and the free workers."""
    mode: str = "sync"
    """Patch exchange: "sync" (fresh every step, exact) or "displaced" (previous step's, overlapped)."""
    warmup_steps: int = 2
    """Synchronous steps before displaced mode starts using stale activations; with strategy "steps", the steps
    every worker takes one at a time before the rounds of adjacent steps start."""
    stale_dtype: str | None = None
    """Displaced mode: "float16" or "bfloat16" sends and keeps the stale activations in that precision
    (half the bytes and half the memory held between steps); None keeps the model's dtype."""
    kv_source: str = "kv"
    """What self-attention exchanges: "kv" (each band's keys and values) or "input" (each band's attention
    input, projected to K/V by every band: half the K/V bytes and stale memory for a little more compute)."""
    cfg: bool = False
    """CFG parallel: conditional and unconditional branches on different halves of the workers."""
    ring: int = 1
    """Sequence parallelism: the Ring degree. Each guidance branch's workers are Ulysses x Ring (degree, or
    degree / 2 with cfg, = ulysses x ring); 1: Ulysses over all of them."""

    @property
    def patch_workers(self) -> int:
        if self.auto:
            raise ValueError("parallel.degree is 'auto': the scheduler has not placed the job yet")
        return self.degree // 2 if self.cfg else self.degree


@dataclass
class SegmentSpec:
    """A run of consecutive steps on one model (Hybrid SD: a large model early, a small one late).

    Every segment's model must share the job model's latent space and VAE scaling and the scheduler config its
    sampler steps with (``ModelFamily.segment_traits``); the scheduler may place each segment on a different worker
    group."""

    steps: int
    """Denoising steps in this segment; the segments' steps add up to the job's."""
    model: str = ""
    """Built-in model name or local pipeline directory for these steps; "" keeps the job's model."""
    device: str = ""
    """Which workers run these steps: a pool's name or a device kind; "" keeps the job's `device`."""


@dataclass(frozen=True)
class Segment:
    """The part of a job that one placement runs: its model, where it ends, where it may run."""

    model: str
    """Built-in model name or local pipeline directory."""
    until: int
    """The step after its last (the job's steps for the last segment)."""
    device: str
    """Which workers may run it ("" any, a pool's name or a device kind)."""


@dataclass
class RenderSpec(JobSpec):
    kind = "image"
    models = "image"
    output_file = "image.png"

    model: str = "builtin-image"
    """Built-in model name or a local diffusers pipeline directory."""
    height: int = 512
    """Image height in pixels, a multiple of 8."""
    width: int = 512
    """Image width in pixels, a multiple of 8."""
    sampler: str = ""
    """"pipeline" (the scheduler the model's directory names), "ddim", "euler", "dpm++", "flow-euler": those
    that fit the model's family; "": the family's default (its own scheduler), filled in at validation."""
    true_cfg_scale: float | None = None
    """Classifier-free guidance weight of the families whose ``guidance_scale`` is an input of the denoiser
    (guidance-distilled Flux) or unused (Qwen-Image): > 1 also runs the negative prompt's branch and mixes the two;
    1 leaves it off. None: the pipeline's default (Flux 1.0, Qwen-Image 4.0), set at validation.
    The other families weigh their guidance with ``guidance_scale`` and refuse it above 1."""
    max_sequence_length: int | None = None
    """Prompt tokens the text encoder's output is padded or cut to (the pipeline's ``max_sequence_length``: Flux, SD3,
    Qwen-Image, Sana, PixArt). None: its ``__call__``'s default. Refused for a model whose pipeline takes none."""
    complex_human_instruction: list[str] | None = None
    """Sana's instruction lines set before the prompt (``SanaPipeline``'s ``complex_human_instruction``); ``[]``: none,
    as the pipeline's None. None: its default. Refused for the other families."""
    prompt_2: str | None = None
    """The prompt of the second text encoder (the pipeline's ``prompt_2``: SDXL's second CLIP, Flux's T5, SD3's
    CLIP-G). None: ``prompt``, as the pipeline does. Refused for a model whose pipeline takes none."""
    negative_prompt_2: str | None = None
    """``negative_prompt`` for the second text encoder (the pipeline's ``negative_prompt_2``); None: ``negative_prompt``."""
    prompt_3: str | None = None
    """SD3's T5 prompt (``StableDiffusion3Pipeline``'s ``prompt_3``); None: ``prompt``. Refused for the other families."""
    negative_prompt_3: str | None = None
    """SD3's T5 negative prompt (its ``negative_prompt_3``); None: ``negative_prompt``."""
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    """How the render is spread over workers."""
    segments: list[SegmentSpec] = field(default_factory=list)
    """Empty: all steps on `model`. Otherwise the steps split in runs, each on its own model."""
    compile: bool = False
    """Compile the denoiser's repeated blocks (torch.compile, diffusers' regional compilation), kept per worker
    like the model: the first job on a worker pays the compile, later ones do not."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """Step caching: which work a step reuses from an earlier one ("none", "first-block" for transformers,
    "deepcache" for UNets), the same decision on every worker of the job."""

    @classmethod
    def read_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
        values = dict(values, segments=_segments_from_data(values.get("segments", [])))
        if "cache" in values:
            values["cache"] = _cache_from_data(values["cache"])
        return values

    # --- validation (once, at submit) --------------------------------------------------------------
    def validate(self) -> None:
        self.validate_common()
        check_type("sampler", self.sampler, str)
        for name in ("height", "width"):
            value = getattr(self, name)
            if value <= 0 or value % LATENT_FACTOR:
                raise SpecError(name, f"must be a positive multiple of {LATENT_FACTOR}, got {value}")
            if value > MAX_SIDE:
                raise SpecError(name, f"{value} exceeds the largest supported side {MAX_SIDE}")
        if self.height * self.width > MAX_PIXELS:
            raise SpecError("height", f"{self.height}x{self.width} exceeds {MAX_PIXELS} pixels")
        self.check_steps()
        self.check_seed_and_guidance()
        if self.true_cfg_scale is not None:
            check_type("true_cfg_scale", self.true_cfg_scale, (int, float))
            if not 0 <= self.true_cfg_scale <= 100:
                raise SpecError("true_cfg_scale", f"must be in [0, 100], got {self.true_cfg_scale}")
        self.check_dtype()
        from pipelines.samplers import SAMPLERS

        if self.sampler and self.sampler not in SAMPLERS:
            raise SpecError("sampler", f"unknown sampler {self.sampler!r}; expected one of {sorted(SAMPLERS)}")
        if not self.model.strip():
            raise SpecError("model", "must name a built-in model or a local directory")
        self.check_output_dir()
        family = self.remember_model("model", self.model)
        self.fill_guidance(family)
        self.sampler = family.sampler(self.sampler)
        if self.sampler not in family.samplers:
            raise SpecError(
                "sampler",
                f"{self.sampler!r} does not fit the {family.name} family's models; use one of {list(family.samplers)}",
            )
        self._validate_segments(family)
        for model in self.segment_models():
            path, model_family = self._models[model][:2]
            problem = model_family.size_error(path, self.height, self.width)
            if problem is not None:
                raise SpecError(*problem)
            if self.true_cfg_scale > 1.0 and not model_family.true_cfg:
                raise SpecError(
                    "true_cfg_scale",
                    f"the {model_family.name} family weighs its guidance with guidance_scale; leave true_cfg_scale at 1",
                )
            self.check_sampler_steps(model, self.sampler)
        self._validate_encode_options()
        self._validate_parallel()
        self._validate_cache()
        check_type("compile", self.compile, bool)
        for model in self.segment_models() if self.compile else []:
            path, family = self._models[model][:2]
            if not family.repeated_blocks(family.denoiser_class(path)):
                raise SpecError("compile", f"{Path(path).name}'s denoiser names no repeated blocks to compile")

    def _validate_cache(self) -> None:
        cache = self.cache
        check_type("cache.mode", cache.mode, str)
        if cache.mode not in CACHE_MODES:
            raise SpecError("cache.mode", f"unknown mode {cache.mode!r}; expected one of {CACHE_MODES}")
        check_type("cache.threshold", cache.threshold, (int, float))
        if not 0 < cache.threshold <= 10:
            raise SpecError("cache.threshold", f"must be in (0, 10], got {cache.threshold}")
        limits = {"interval": 1, "branch": 0, "warmup_steps": 0, "max_skips": 1}
        for name, least in limits.items():
            value = getattr(cache, name)
            check_type(f"cache.{name}", value, int)
            if not least <= value <= MAX_STEPS:
                raise SpecError(f"cache.{name}", f"must be in [{least}, {MAX_STEPS}], got {value}")
        check_type("cache.order", cache.order, int)
        if not 0 <= cache.order <= MAX_TAYLOR_ORDER:
            raise SpecError("cache.order", f"must be in [0, {MAX_TAYLOR_ORDER}], got {cache.order}")
        if cache.min_psnr is not None:
            check_type("cache.min_psnr", cache.min_psnr, (int, float))
            if not 10 <= cache.min_psnr <= 100:
                raise SpecError("cache.min_psnr", f"must be in [10, 100] dB, got {cache.min_psnr}")
            if not cache.enabled:
                raise SpecError("cache.min_psnr", "calibrates a cache mode's setting: set cache.mode too")
        check_type("cache.calibrated", cache.calibrated, bool)
        if cache.calibrated:
            raise SpecError("cache.calibrated", "is set by the service when it reuses a calibration; leave it out")
        for model in self.segment_models() if cache.enabled else []:
            path, family = self._models[model][:2]
            problem = family.cache_error(path, cache)
            if problem is not None:
                raise SpecError(*problem)

    def _cfg_parallel_error(self, model: str) -> str | None:
        """Why CFG parallel cannot split ``model``'s branches (None: it can)."""
        if self.guides(model):
            return None
        weight = self.cfg_weight_field(model)
        if self.model_family(model).guidance_embedded(self.model_path(model)):
            return (
                f"CFG parallel splits two guidance branches, and {Path(self.model_path(model)).name}'s UNet takes "
                f"{weight} as an input (time_cond_proj_dim, an LCM-distilled UNet): its pipeline runs one branch"
            )
        if getattr(self, weight) <= 1.0:
            return f"CFG parallel needs {weight} > 1, got {getattr(self, weight)}"
        return f"CFG parallel needs a negative_prompt: {weight} runs the pipeline's true CFG only with one"

    def _validate_parallel(self) -> None:
        par = self.parallel
        check_type("parallel.strategy", par.strategy, str)
        if par.degree != "auto":
            check_type("parallel.degree", par.degree, int)
        check_type("parallel.mode", par.mode, str)
        check_type("parallel.warmup_steps", par.warmup_steps, int)
        check_type("parallel.cfg", par.cfg, bool)
        check_type("parallel.ring", par.ring, int)
        if par.ring < 1:
            raise SpecError("parallel.ring", f"must be at least 1, got {par.ring}")
        if par.stale_dtype is not None:
            check_type("parallel.stale_dtype", par.stale_dtype, str)
            if par.stale_dtype not in STALE_DTYPES:
                raise SpecError(
                    "parallel.stale_dtype",
                    f"unknown dtype {par.stale_dtype!r}; expected one of {sorted(STALE_DTYPES)} or null",
                )
        check_type("parallel.kv_source", par.kv_source, str)
        if par.kv_source not in KV_SOURCES:
            raise SpecError(
                "parallel.kv_source", f"unknown source {par.kv_source!r}; expected one of {KV_SOURCES}"
            )
        if par.strategy not in STRATEGIES:
            raise SpecError(
                "parallel.strategy", f"unknown strategy {par.strategy!r}; expected one of {STRATEGIES}"
            )
        if not par.auto and par.degree < 1:
            raise SpecError("parallel.degree", f"must be at least 1, got {par.degree}")
        if par.mode not in PATCH_MODES:
            raise SpecError("parallel.mode", f"unknown mode {par.mode!r}; expected one of {PATCH_MODES}")
        if not 0 <= par.warmup_steps <= MAX_STEPS:
            raise SpecError("parallel.warmup_steps", f"must be in [0, {MAX_STEPS}], got {par.warmup_steps}")
        needs_plan = par.strategy in IMAGE_STRATEGIES and IMAGE_STRATEGIES[par.strategy].needs_plan
        for model in self.segment_models() if needs_plan else []:
            path, family = self._models[model][:2]
            problem = family.plan_error(par.strategy, path)
            if problem is not None:
                raise SpecError("parallel.strategy", problem)
        STRATEGY_CHECKS[par.strategy](self)

    def _validate_segments(self, family: ModelFamily) -> None:
        if not self.segments:
            return
        mine = None  # the job model's traits, read once for every segment that switches model
        for i, segment in enumerate(self.segments):
            name = f"segments[{i}]"
            check_type(f"{name}.steps", segment.steps, int)
            check_type(f"{name}.model", segment.model, str)
            check_type(f"{name}.device", segment.device, str)
            check_device(f"{name}.device", segment.device)
            if segment.steps < 1:
                raise SpecError(f"{name}.steps", f"must be at least 1, got {segment.steps}")
            if segment.model:
                mine = mine or family.segment_traits(self.model_path(), self.sampler)
                self._check_segment_model(name, segment.model, mine)
        total = sum(segment.steps for segment in self.segments)
        if total != self.steps:
            raise SpecError("segments", f"the segments' steps add up to {total}, but steps is {self.steps}")

    def _check_segment_model(self, name: str, model: str, mine: dict[str, Any]) -> None:
        """Refuse a segment's ``model`` that cannot take over the job's steps: its denoiser continues the latent and
        the sampler state the segment before it left, so it must share the job model's latent space and VAE scaling
        and the noise schedule, prediction and scheduler config the job's sampler steps it with
        (``ModelFamily.segment_traits``, the job model's ``mine``); and the job's sampler must fit its family, as it
        must the job model's."""
        other = self.remember_model(f"{name}.model", model)
        path = resolve_model(model)
        theirs = other.segment_traits(path, self.sampler)
        differ = [
            f"{trait} {theirs[trait]!r} (the job model's: {mine[trait]!r})"
            for trait in mine
            if trait in theirs and theirs[trait] != mine[trait]
        ]
        if differ:
            raise SpecError(
                f"{name}.model",
                f"{Path(path).name} cannot take over the job's steps from {Path(self.model_path()).name}: "
                f"{'; '.join(differ)}. A segment's model continues the job's latent and sampler state: it needs the "
                "job model's VAE latents and scheduler config",
            )
        if self.sampler not in other.samplers:
            raise SpecError(
                "sampler",
                f"{self.sampler!r} does not fit the {other.name} family of {name}.model ({Path(path).name}); "
                f"use one of {list(other.samplers)}",
            )

    # --- what placing it needs ------------------------------------------------------------------------
    def encode_options(self) -> dict[str, Any]:
        """The pipeline ``__call__`` arguments this job sets that shape its prompt encoding (``encode_options`` of the
        model's family): what ``pipelines.sampling.encode_conditioning`` passes on."""
        return {name: getattr(self, name) for name in ENCODE_OPTIONS if getattr(self, name, None) is not None}

    def _validate_encode_options(self) -> None:
        """Each option set only where every model of the job takes it (segments may change family)."""
        options = self.encode_options()
        if "max_sequence_length" in options:
            check_sequence_length(options["max_sequence_length"])
        for name in PROMPTS:
            if name in options:
                check_type(name, options[name], str)
                check_text(name, options[name])
        if "complex_human_instruction" in options:
            lines = options["complex_human_instruction"]
            check_type("complex_human_instruction", lines, list)
            for line in lines:
                check_type("complex_human_instruction", line, str)
                check_text("complex_human_instruction", line)
        for model in self.segment_models():
            family = self._models[model][1]
            for name in options:
                if name not in family.encode_options:
                    raise SpecError(
                        name, f"{Path(self._models[model][0]).name}'s {family.name} pipeline takes none: leave it unset"
                    )

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

    def segment_from(self, step: int) -> Segment:
        """The segment that runs step ``step`` (0-based): its model, end and device request."""
        return Segment(*self.segment_at(step), self.segment_device(step))

    def auto_degree(self, model: str, free: int, rule) -> int:
        """degree=auto: what the scheduler's degree rule picks for this segment from ``free`` workers (with
        strategy "auto", the degree of the plan it picks)."""
        if self.parallel.strategy == "auto":
            from cluster.scheduler import auto_choice

            return auto_choice(self, model, free, rule)["degree"]
        return rule(self, model, free)

    def device_requests(self) -> dict[str, str]:
        """Field name -> device request, for every segment (the job's own when there are none)."""
        named = {f"segments[{i}].device": s.device for i, s in enumerate(self.segments) if s.device}
        if not self.segments or len(named) < len(self.segments):
            named["device"] = self.device
        return named

    def placed(self, model: str, degree: int, choice: dict | None = None) -> RenderSpec:
        """This spec as one segment runs it, what its workers receive: that segment's model (its
        directory), a concrete degree (1: no patches), and for strategy "auto" the scheduler's ``choice``
        (``strategy``, ``cfg``, ``ring``; without one, bands when the family has them)."""
        par = self.parallel
        strategy = par.strategy
        if strategy == "auto":
            choice = choice or {"strategy": "patch" if "patch" in self.model_family(model).strategies else "none"}
            par = replace(par, cfg=choice.get("cfg", False), ring=choice.get("ring", 1))
            strategy = choice["strategy"]
        strategy = "none" if par.auto and degree == 1 else strategy
        parallel = replace(par, strategy=strategy, degree=degree)
        fields = {
            **self.input_fields(),
            "guidance_scale": float(self.guidance_scale),
            "true_cfg_scale": float(self.true_cfg_scale),
            "segments": [],
        }
        return RenderSpec(**{**fields, "model": self.model_path(model), "parallel": parallel})

    def min_workers(self) -> int:
        """The fewest workers the job can start with (for deciding whom to pause)."""
        return 1 if self.parallel.auto else self.parallel.degree

    def check_fits(self, pool_workers: int) -> None:
        """Refuse a spec that asks for more workers than the pool has."""
        if self.parallel.auto:
            return
        if self.parallel.degree > pool_workers:
            raise SpecError(
                "parallel.degree", f"degree {self.parallel.degree} exceeds the pool's {pool_workers} workers"
            )

    def progress_total(self) -> int:
        return self.steps

    def plan_candidates(self, model: str) -> list[str]:
        """The cost model's strategies (``parallel.cost.choose_plan``) strategy "auto" may pick for ``model``:
        its family's bands and sequence parallelism, each also within two guidance branches when it guides."""
        family, guided = self.model_family(model), self.guides(model)
        candidates = []
        for strategy, split in (("patch", "cfg"), ("sequence", "sequence-cfg")):
            if strategy in family.strategies:
                candidates += [strategy, split] if guided else [strategy]
        return candidates

    def calibration_key(self, placed: RenderSpec) -> str | None:
        """What a ``cache.min_psnr`` calibration of ``placed`` depends on (None: it asks for none): the model, size,
        sampler and steps, and the cache's own settings."""
        cache = placed.cache
        if not cache.enabled or cache.min_psnr is None:
            return None
        fields = [placed.model, placed.dtype, placed.height, placed.width, placed.sampler, placed.steps]
        settings = [cache.mode, cache.min_psnr, cache.warmup_steps, cache.max_skips, cache.branch]
        if cache.mode == "taylorseer":
            settings.append(cache.order)
        return json.dumps([*fields, *settings])

    def with_calibration(self, placed: RenderSpec, calibrations) -> RenderSpec:
        """``placed`` with the kept calibration of its key, when there is one (``cluster.calibrations``)."""
        key = self.calibration_key(placed)
        known = calibrations.get(key) if key is not None else None
        if known is None:
            return placed
        from parallel.cache.calibrate import Calibration

        cache = Calibration(**known).applied(replace(placed.cache, calibrated=True))
        return RenderSpec(**{**placed.input_fields(), "cache": cache})

    def learned_calibration(self, placed: RenderSpec, metadata: dict) -> tuple[str, dict] | None:
        """(key, calibration) when this run calibrated its cache (not when it reused one)."""
        key = self.calibration_key(placed)
        calibration = (metadata.get("cache") or {}).get("calibration")
        if key is None or calibration is None or not calibration.get("renders"):
            return None
        return key, calibration

    def runs(self, placed: RenderSpec) -> bool:
        """Whether ``placed`` (one of this job's placements) passes its strategy's checks (a plan the cost
        model picked may not: heads or tokens that do not split evenly)."""
        try:
            STRATEGY_CHECKS[placed.parallel.strategy](placed)
        except SpecError:
            return False
        return True

    # --- how the service runs a segment of it ----------------------------------------------------------
    def units_of(self, state: dict) -> int:
        """The step a checkpoint state was taken at."""
        return state["step_index"]

    def preview_latent(self, state: dict) -> Any:
        """The whole image's latent (the loop keeps it unpacked: (1, channels, rows, columns))."""
        return state["latents"][0]

    def describe_segment(self, placed: RenderSpec, first: int, until: int) -> str:
        par = placed.parallel
        where = f"from step {first}" if first else "from the start"
        return f"(degree {par.degree}, {par.strategy}, {Path(placed.model).name}), {where} to step {until}"

    def segment_record(self, placed: RenderSpec, first: int, last: int) -> dict:
        return {
            "steps": [first, last],
            "model_path": placed.model,
            "strategy": placed.parallel.strategy,
            "degree": placed.parallel.degree,
        }

    def run_segment(self, pools, placed: RenderSpec, workers: list[int], job, hooks) -> SegmentResult:
        """Steps ``job.first`` to ``job.until`` of ``placed`` on ``workers`` (``cluster.segment_runner``)."""
        from runtime.jobs.image import run_render

        result = run_render(
            pools,
            placed,
            progress=False,
            on_step=hooks.on_unit,
            resume=job.resume,
            checkpoint_every=hooks.checkpoint_every,
            on_checkpoint=hooks.on_checkpoint,
            indices=workers,
            until=job.until,
            on_last_call=hooks.release,  # a one-worker job's next job queues behind its decode
        )
        return SegmentResult(result.metadata, result.checkpoint, result.image, result.latents)

    def publish(self, job_id: str, result: SegmentResult, metadata: dict) -> Path:
        """Write image.png and metadata.json into outputs/<job-id>/ in one rename."""
        from cluster.outputs import write_image_job

        return write_image_job(self.output_dir, job_id, result.output, metadata)


def _check_auto(spec: RenderSpec) -> None:
    """Strategy "auto": the scheduler picks the strategy, degree and CFG split per placement."""
    par = spec.parallel
    if not par.auto:
        raise SpecError("parallel.degree", "strategy 'auto' picks the degree too: use parallel.degree=auto")
    if par.cfg:
        raise SpecError("parallel.cfg", "strategy 'auto' splits the guidance branches itself when that is fastest")


def _check_one_worker(spec: RenderSpec) -> None:
    """Strategy "none": the whole job on one worker."""
    par = spec.parallel
    if par.auto:
        raise SpecError("parallel.degree", "'auto' picks a patch degree; use parallel.strategy=patch")
    if par.degree != 1 or par.cfg:
        raise SpecError("parallel.degree", "strategy 'none' runs on exactly one worker; use parallel=patch")


def _check_patch_bands(spec: RenderSpec) -> None:
    """Strategy "patch": row bands that fit every segment model's alignment, CFG branches split on request."""
    par = spec.parallel
    if par.auto and par.cfg:
        raise SpecError("parallel.cfg", "degree 'auto' picks patch bands only; give an even degree for CFG")
    if par.cfg and not par.auto and par.degree % 2:
        raise SpecError(
            "parallel.degree", f"CFG parallel needs an even worker count (2 x bands), got {par.degree}"
        )
    for model in spec.segment_models() if par.cfg else []:
        problem = spec._cfg_parallel_error(model)
        if problem is not None:
            raise SpecError("parallel.cfg", problem)
    if par.auto:
        return  # the scheduler only picks degrees whose bands fit
    for model in spec.segment_models():
        why = too_short_for_bands(spec.height, spec.latent_rows(model), par.patch_workers, spec.band_alignment(model))
        if why is not None:
            raise SpecError("parallel.degree", why)


def _check_sequence(spec: RenderSpec) -> None:
    """Strategy "sequence": Ulysses x Ring workers per guidance branch, whose tokens and heads split evenly."""
    par = spec.parallel
    if par.auto:
        raise SpecError("parallel.degree", "'auto' picks patch bands only; give sequence parallelism a degree")
    branches = 2 if par.cfg else 1
    for model in spec.segment_models() if par.cfg else []:  # true_cfg_scale for Flux and Qwen-Image
        problem = spec._cfg_parallel_error(model)
        if problem is not None:
            raise SpecError("parallel.cfg", problem)
    if par.degree % branches or par.degree // branches < 2:
        per = "2 x (ulysses x ring) with cfg" if par.cfg else "ulysses x ring"
        raise SpecError(
            "parallel.degree", f"sequence parallelism splits each model over at least 2 workers ({per}), got {par.degree}"
        )
    workers = par.degree // branches
    if workers % par.ring:
        raise SpecError(
            "parallel.ring",
            f"the Ring degree {par.ring} must divide the {workers} workers of a branch (ulysses x ring)",
        )
    ulysses = workers // par.ring
    for model in spec.segment_models():
        path = spec.model_path(model)
        try:
            shape = spec.model_family(model).sequence_shape(path, spec.height, spec.width, spec.max_sequence_length)
        except NotImplementedError as err:
            raise SpecError("parallel.strategy", str(err)) from err
        if shape.heads % ulysses:
            raise SpecError(
                "parallel.degree",
                f"Ulysses over {ulysses} workers shares out attention heads, but {Path(path).name} has {shape.heads}: "
                "Ulysses' share of a branch's workers (degree / ring) must divide them; raise parallel.ring to move "
                "workers to Ring",
            )
        if par.ring > 1 and shape.masked_text and shape.heads % workers:
            raise SpecError(
                "parallel.ring",
                f"{Path(path).name} pads a prompt to split evenly and masks the padding, which diffusers' Ring cannot "
                f"take: its Ring workers then run as Ulysses over all {workers} workers of a branch, which its "
                f"{shape.heads} attention heads do not divide",
            )
        if shape.image_tokens % workers:
            raise SpecError(
                "height",
                f"{spec.height}x{spec.width} px is {shape.image_tokens} image tokens for {Path(path).name}, which do "
                f"not split evenly between {workers} workers: choose a size whose token count they divide",
            )
        if shape.text_tokens % workers and spec.max_sequence_length:
            raise SpecError(
                "max_sequence_length",
                f"{Path(path).name} splits the prompt's {shape.text_tokens} tokens too, which do not divide between "
                f"{workers} workers: make it a multiple of {workers}",
            )
        if shape.text_tokens % workers:
            raise SpecError(
                "parallel.degree",
                f"{Path(path).name} splits {shape.text_tokens} text tokens too, which do not divide between "
                f"{workers} workers",
            )


def _check_steps(spec: RenderSpec) -> None:
    """Strategy "steps" (ParaStep): adjacent steps on ``degree`` workers, each running the whole model."""
    par = spec.parallel
    if par.auto or par.degree < 2:
        raise SpecError("parallel.degree", f"step parallelism takes adjacent steps on 2 or more workers, got {par.degree}")
    if par.cfg:
        raise SpecError("parallel.cfg", "step parallelism runs both guidance branches on every worker; leave cfg off")
    if spec.cache.enabled:
        raise SpecError("cache.mode", "step parallelism already reuses each round's noise; use cache.mode=none")


STRATEGY_CHECKS: dict[str, Callable[[RenderSpec], None]] = {
    "none": _check_one_worker,
    "patch": _check_patch_bands,
    "sequence": _check_sequence,
    "auto": _check_auto,
    "steps": _check_steps,
}
"""The spec's strategy table: what each strategy (``runtime.jobs.strategies``) asks of an image job's fields."""


def _cache_from_data(data: Any) -> CacheConfig:
    if isinstance(data, CacheConfig):
        return data
    if not isinstance(data, dict):
        raise SpecError("cache", f"expected a mapping of cache fields, got {type(data).__name__}")
    check_known("cache.", data, CacheConfig)
    return CacheConfig(**data)


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

