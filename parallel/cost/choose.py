"""degree=auto: the fastest strategy and degree that fit in memory, given the free workers.

    choose_plan(model, height, width, free_workers, strategies=("patch", "sequence"), device="a100-80gb",
                link="nvlink3") -> Plan
    choose_degree(model, height, width, free_workers, device="cpu-core", link="loopback") -> int

``choose_plan`` predicts every strategy the caller offers (the model family's, which the scheduler passes:
"patch" bands, "sequence" parallelism with every Ring degree the heads allow, "cfg" / "sequence-cfg" when the
job's guidance branches may be split, "frames" for a video) at every degree up to the free workers, and
returns the fastest that fits. A larger degree is taken only when it is predicted at least ``min_gain``
faster per step than the best smaller one, so that workers are not spent for a rounding error. Degrees a
strategy cannot run (bands need ``row_align`` rows each; sequence parallelism needs the tokens to split
evenly and Ulysses' share of the workers to divide the heads) or that do not fit the device's memory are
skipped; when nothing fits, the plan with the smallest per-worker memory is returned (the scheduler may
still refuse the job). ``choose_degree`` is the patch-band (or, for a video model, frame-stage) degree alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from parallel.cost.models import VIDEO_KINDS, ModelSpec, get_model_spec, registry
from parallel.cost.predict import Prediction, cached_profile, predict, predict_model
from parallel.cost.profile import ModelProfile, profile_model
from parallel.cost.specs import load_specs

JOB_STRATEGY = {
    "none": "none",
    "patch": "patch",
    "cfg": "patch",
    "sequence": "sequence",
    "sequence-cfg": "sequence",
    "steps": "steps",
    "frame-pipeline": "frames",
}
"""Cost-model strategy -> the job spec's ``parallel.strategy`` that runs it (the CFG split is ``parallel.cfg``)."""
ALIASES = {"frames": "frame-pipeline"}
"""Job-spec strategy names the caller may pass, as the cost model names them."""


@dataclass(frozen=True)
class Plan:
    """A strategy and degree for one job, with what the cost model predicts for it."""

    strategy: str
    """The cost model's strategy: "none", "patch", "cfg" (bands in each guidance branch), "sequence",
    "sequence-cfg" or "frame-pipeline"."""
    degree: int
    """Workers."""
    ring: int
    """Sequence parallelism: the Ring degree of each branch (its Ulysses degree is the rest); 1 otherwise."""
    prediction: Prediction
    """The predicted step time, speedup and memory."""

    @property
    def job_strategy(self) -> str:
        """The job spec's ``parallel.strategy`` that runs this plan."""
        return JOB_STRATEGY[self.strategy]

    @property
    def cfg(self) -> bool:
        """Whether the guidance branches run on two halves of the workers (``parallel.cfg``)."""
        return self.strategy in ("cfg", "sequence-cfg")


def candidate_degrees(profile: ModelProfile, free_workers: int, strategy: str = "patch") -> list[int]:
    """Degrees the latent can be split into, up to ``free_workers``."""
    most = max(1, profile.latent_rows // max(1, profile.row_align))
    out = []
    for n in range(1, max(1, free_workers) + 1):
        bands = n // 2 if strategy == "cfg" else n
        if strategy == "cfg" and (n % 2 or n < 2):
            continue
        if bands <= most:
            out.append(n)
    return out or [1]


def ring_degrees(profile: ModelProfile, workers: int) -> list[int]:
    """Ring degrees sequence parallelism can run with over ``workers`` (of one guidance branch): every
    divisor whose Ulysses share (workers / ring) divides the heads of every attention layer; none when the
    image's or the text's tokens do not split evenly between the workers (diffusers' requirement)."""
    if workers < 2 or not profile.attention.tokens:
        return []
    image, text = profile.tokens, profile.text_tokens
    if image % workers or text % workers:
        return []
    heads = set(profile.attention.heads)
    return [r for r in range(1, workers + 1) if workers % r == 0 and all(h % (workers // r) == 0 for h in heads)]


def rank_degrees(
    profile: ModelProfile,
    free_workers: int,
    device: str = "cpu-core",
    link: str = "loopback",
    strategy: str = "patch",
    mode: str = "displaced",
    steps: int = 50,
    warmup_steps: int = 1,
    specs_yaml: str | None = None,
    kv_source: str = "kv",
    stale_dtype: str | None = None,
) -> list[Prediction]:
    """Predictions for every candidate degree of a band strategy ("patch" or "cfg"; ``candidate_degrees``)."""
    out = []
    for n in candidate_degrees(profile, free_workers, strategy):
        out.append(
            predict(
                profile,
                strategy if n > 1 else "none",
                n,
                device,
                link,
                mode,
                steps=steps,
                warmup_steps=warmup_steps,
                specs_yaml=specs_yaml,
                kv_source=kv_source,
                stale_dtype=stale_dtype,
            )
        )
    return out


def rank_sequence(
    profile: ModelProfile,
    free_workers: int,
    device: str = "cpu-core",
    link: str = "loopback",
    strategy: str = "sequence",
    steps: int = 50,
    specs_yaml: str | None = None,
    ring_overlap: bool = False,
) -> list[Prediction]:
    """Predictions of sequence parallelism ("sequence", or "sequence-cfg" with the branches split) at every
    degree up to ``free_workers`` it can run, each with its fastest Ring degree."""
    branches = 2 if strategy == "sequence-cfg" else 1
    if branches == 2 and profile.batch % 2:
        return []
    out = []
    for n in range(2 * branches, free_workers + 1, branches):
        options = [
            predict(profile, strategy, n, device, link, steps=steps, specs_yaml=specs_yaml, ring=r,
                    ring_overlap=ring_overlap)
            for r in ring_degrees(profile, n // branches)
        ]
        if options:
            out.append(min(options, key=lambda p: p.mean_step_s))
    return out


def choose_plan(
    model: str | ModelSpec | ModelProfile,
    height: int,
    width: int,
    free_workers: int,
    strategies: Iterable[str] = ("patch",),
    device: str = "cpu-core",
    link: str = "loopback",
    frames: int = 1,
    mode: str = "displaced",
    steps: int = 50,
    min_gain: float = 0.05,
    specs_yaml: str | None = None,
    kv_source: str = "kv",
    stale_dtype: str | None = None,
    batch: int | None = None,
    ring_overlap: bool = False,
) -> Plan:
    """The plan (strategy, degree, ring) predicted fastest for this job that fits in memory.

    ``strategies``: what the model can run ("none" is always a candidate at one worker): "patch", "cfg"
    (bands in each of two guidance branches), "sequence", "sequence-cfg", and "frames" (or "frame-pipeline")
    for video models. The scheduler passes its model family's strategies, and the CFG variants when the job's
    guidance branches may be split.
    ``model``: a registered name, a ``ModelSpec``, or a ``ModelProfile`` already taken at this size (then
    height/width/frames/batch are unused). ``batch``: of the profiled forward, 2 with CFG batched (None: the
    model's default, ``ModelSpec.batch``). ``mode`` / ``kv_source`` / ``stale_dtype``: the bands' exchange
    options; ``ring_overlap``: whether sequence parallelism's ring passes K/V during the attention.
    ``device`` / ``link``: names in ``parallel/cost/specs.yaml`` (or in ``specs_yaml``).
    """
    if free_workers < 1:
        raise ValueError(f"free_workers: need at least 1, got {free_workers}")
    wanted = {ALIASES.get(s, s) for s in strategies}
    unknown = wanted - set(JOB_STRATEGY)
    if unknown:
        raise ValueError(f"strategies: unknown {sorted(unknown)}; expected some of {sorted(JOB_STRATEGY)} or 'frames'")
    if not isinstance(model, ModelProfile) and get_model_spec(model).kind in VIDEO_KINDS:
        # a video model's workers are frame-pipeline stages (its bands are not predicted)
        spec = get_model_spec(model)
        most = free_workers if "frame-pipeline" in wanted else 1
        ranked = _rank_stages(spec, height, width, frames, most, device, link, steps, specs_yaml)
        return _pick([_plan(p) for p in ranked], min_gain)
    profile = _profile(model, height, width, frames, batch, device, specs_yaml)
    ranked: list[Prediction] = []
    for strategy in ("patch", "cfg"):
        if strategy in wanted and (strategy == "patch" or profile.batch % 2 == 0):
            ranked += rank_degrees(profile, free_workers, device, link, strategy, mode, steps,
                                   specs_yaml=specs_yaml, kv_source=kv_source, stale_dtype=stale_dtype)
    for strategy in ("sequence", "sequence-cfg"):
        if strategy in wanted:
            ranked += rank_sequence(profile, free_workers, device, link, strategy, steps, specs_yaml, ring_overlap)
    if "steps" in wanted:  # approximate, as displaced bands are: only when the caller offers it
        ranked += [predict(profile, "steps", d, device, link, specs_yaml=specs_yaml, steps=steps) for d in range(2, free_workers + 1)]
    if not any(p.degree == 1 for p in ranked):
        ranked.append(predict(profile, "none", 1, device, link, specs_yaml=specs_yaml, steps=steps))
    return _pick([_plan(p) for p in ranked], min_gain)


def choose_degree(
    model: str | ModelSpec | ModelProfile,
    height: int,
    width: int,
    free_workers: int,
    device: str = "cpu-core",
    link: str = "loopback",
    frames: int = 1,
    mode: str = "displaced",
    steps: int = 50,
    min_gain: float = 0.05,
    specs_yaml: str | None = None,
    kv_source: str = "kv",
    stale_dtype: str | None = None,
) -> int:
    """The degree (1..free_workers) predicted fastest for this job that fits in memory: patch-parallel
    bands for image models, frame-pipeline stages for video models (``VIDEO_KINDS``: Wan, HunyuanVideo, LTX-Video,
    CogVideoX).

    ``model``: a registered name ("builtin-image", "sdxl", "pixart-alpha", "wan2.1-1.3b", ...), a
    ``ModelSpec``, or a ``ModelProfile`` already taken at this size (then height/width/frames are unused).
    ``device`` / ``link``: names in ``parallel/cost/specs.yaml`` (or in ``specs_yaml``).
    ``kv_source`` / ``stale_dtype``: the job's ``PatchConfig`` exchange options (image models).
    """
    strategies = ("patch", "frames")
    plan = choose_plan(model, height, width, free_workers, strategies, device, link, frames, mode, steps,
                       min_gain, specs_yaml, kv_source, stale_dtype)
    return plan.degree


def _profile(
    model: str | ModelSpec | ModelProfile, height: int, width: int, frames: int, batch: int | None, device: str,
    specs_yaml: str | None,
) -> ModelProfile:
    """The model's profile at this size in the device's dtype (memoised for registered models)."""
    if isinstance(model, ModelProfile):
        return model
    spec = get_model_spec(model)
    dtype = load_specs(*([specs_yaml] if specs_yaml else [])).device(device).dtype
    if registry().get(spec.name) == spec:
        return cached_profile(spec.name, height, width, frames, batch or spec.batch, dtype)
    return profile_model(spec, height, width, frames, batch, getattr(torch, dtype))


def _plan(p: Prediction) -> Plan:
    return Plan(p.strategy, p.degree, p.ring, p)


def _pick(ranked: list[Plan], min_gain: float) -> Plan:
    """Fastest fitting plan; at a larger degree only when ``min_gain`` faster than the best at fewer
    workers; when nothing fits, the smallest memory."""
    fitting = sorted((p for p in ranked if p.prediction.fits), key=lambda p: (p.degree, p.prediction.mean_step_s))
    if not fitting:
        return min(ranked, key=lambda p: p.prediction.memory_bytes)
    best = fitting[0]  # in degree order, the fastest of each degree first
    for p in fitting[1:]:
        if p.prediction.mean_step_s < best.prediction.mean_step_s * (1.0 - min_gain):
            best = p
    return best


def _rank_stages(
    spec: ModelSpec, height: int, width: int, frames: int, free_workers: int, device: str, link: str,
    steps: int, specs_yaml: str | None,
) -> list[Prediction]:
    """Frame-pipeline predictions for 1..free_workers stages (no more stages than transformer blocks or
    frame blocks of 8 latent frames)."""
    latent_frames = (frames - 1) // spec.temporal_scale + 1
    blocks = -(-latent_frames // 8)
    layers = spec.config.get("num_layers", 1)
    out = []
    for n in range(1, max(1, min(free_workers, layers, blocks)) + 1):
        out.append(
            predict_model(spec, height, width, "frame-pipeline", n, device, link, frames=frames, steps=steps,
                          specs_yaml=specs_yaml)
        )
    return out
