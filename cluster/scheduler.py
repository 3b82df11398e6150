"""The scheduling policy, as plain Python: which workers a job gets, and whom to pause for it.

The controller asks it three things about the job at the head of the queue (priority, then submit
time): how many workers it wants now (`wanted_degree`), which free workers to give it
(`WorkerBook.take`, preferring workers that already hold its model), and, when too few are free,
which running jobs of lower priority to pause at their next step boundary (`jobs_to_pause`). A
video job is placed the same way, on `parallel.degree` workers (its stages; "auto": the free ones it
can use, so a paused video may resume on another count), and pauses at a tick boundary. The
head of the queue blocks the jobs behind it (no backfill), so a large job is never starved by a
stream of small ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from parallel.patch.bands import band_bounds

if TYPE_CHECKING:
    from cluster.jobs.image import RenderSpec
    from cluster.jobs.spec import JobSpec

MIN_AUTO_BAND_PIXELS = 256
"""The simple degree rule's smallest band height: a narrower band is mostly halo and traffic."""


@dataclass
class RunningJob:
    job_id: str
    """The job's id."""
    priority: int
    """Its priority (higher runs first)."""
    submitted_at: float
    """Unix time of submission (the tie-break)."""
    workers: list[int]
    """Pool indices it holds."""


@dataclass
class WorkerBook:
    """Which pool workers are free, and which models (path, dtype) each has loaded."""

    size: int
    """Workers in the pool."""
    free: set[int] = field(default_factory=set)
    """Indices of idle workers."""
    models: dict[int, set[str]] = field(default_factory=dict)
    """Per worker, the model keys its cache holds."""

    def __post_init__(self) -> None:
        self.free = set(range(self.size)) if not self.free else self.free
        self.models = {i: set() for i in range(self.size)} | self.models

    def take(self, count: int, model_key: str, among: set[int] | None = None) -> list[int]:
        """`count` free workers (of `among`, by default of all), marked busy: those with `model_key`
        cached first, then those holding fewest other models (so each model keeps a warm home), then
        by index."""
        free = self.free if among is None else self.free & among
        if count > len(free):
            raise ValueError(f"{count} workers wanted, {len(free)} free")
        ranked = sorted(free, key=lambda i: (model_key not in self.models[i], len(self.models[i]), i))
        chosen = sorted(ranked[:count])
        self.free -= set(chosen)
        for i in chosen:
            self.models[i].add(model_key)
        return chosen

    def give_back(self, workers: list[int]) -> None:
        self.free |= set(workers)

    def forget(self, workers: list[int]) -> None:
        """These workers were replaced by fresh processes: their caches are empty."""
        for i in workers:
            self.models[i] = set()


DegreeRule = Callable[["RenderSpec", str, int], int]
"""(job spec, the segment's model, free workers >= 1) -> the degree to run the next segment with."""


def simple_degree_rule(
    spec: RenderSpec, model: str, free: int, min_band_pixels: int = MIN_AUTO_BAND_PIXELS
) -> int:
    """The largest degree up to `free` whose bands are all at least `min_band_pixels` tall and fit
    the model's alignment: a tiny image runs on one worker, a tall one on every free worker."""
    rows = spec.latent_rows(model)
    align = spec.band_alignment(model)
    best = 1
    for degree in range(2, free + 1):
        if spec.height / degree < min_band_pixels:
            break
        try:
            band_bounds(rows, degree, align)
        except ValueError:
            break
        best = degree
    return best


class CostModelDegreeRule:
    """degree=auto by the cost model (parallel.cost.choose_degree): the degree predicted fastest per
    step on this device and link that fits in memory, capped by the free workers and by what the
    model's bands allow. The model's family describes it for the cost model (a UNet pipeline from its
    unet/config.json); a model its family cannot describe falls back to `simple_degree_rule`."""

    def __init__(self, device: str = "cpu-core", link: str = "loopback") -> None:
        self.device = device
        self.link = link
        self._profiles: dict[tuple[str, int, int], object] = {}

    def __call__(self, spec: RenderSpec, model: str, free: int) -> int:
        from parallel.cost.choose import choose_degree

        profile = self._profile(spec, model)
        if profile is None:
            return simple_degree_rule(spec, model, free)
        chosen = choose_degree(
            profile,
            spec.height,
            spec.width,
            free,
            self.device,
            self.link,
            mode=spec.parallel.mode,
            steps=spec.steps,
            kv_source=spec.parallel.kv_source,
            stale_dtype=spec.parallel.stale_dtype,
        )
        return min(chosen, simple_degree_rule(spec, model, free, min_band_pixels=0))

    def plan(self, spec: RenderSpec, model: str, free: int) -> dict | None:
        """For strategy "auto": the plan (strategy, degree, cfg, ring) predicted fastest that fits, among what
        the model's family can run (``parallel.cost.choose_plan``); None when the cost model cannot describe the
        model or its pick does not pass the strategy's checks (heads or tokens that do not split evenly)."""
        from parallel.cost.choose import choose_plan

        profile = self._profile(spec, model)
        candidates = spec.plan_candidates(model)
        if profile is None or not candidates:
            return None
        plan = choose_plan(
            profile,
            spec.height,
            spec.width,
            free,
            candidates,
            self.device,
            self.link,
            mode=spec.parallel.mode,
            steps=spec.steps,
            kv_source=spec.parallel.kv_source,
            stale_dtype=spec.parallel.stale_dtype,
        )
        choice = {"strategy": plan.job_strategy, "degree": plan.degree, "cfg": plan.cfg, "ring": plan.ring}
        return choice if spec.runs(spec.placed(model, plan.degree, choice)) else None

    def _profile(self, spec: RenderSpec, model: str):
        """The model's profile at this size, from its family's description for the cost model (None:
        the family cannot describe it yet); the model's config is read once per model and size."""
        from parallel.cost.profile import profile_model

        path = spec.model_path(model)
        family = spec.model_family(model)
        tokens = family.cost_prompt_tokens(path, getattr(spec, "max_sequence_length", None))
        key = (path, spec.height, spec.width, tokens)
        if key not in self._profiles:
            described = family.cost_model(path, spec.dtype)
            if described is not None and tokens is not None:  # the job's prompt length, not the pipeline's default
                described = replace(described, text_len=tokens)
            self._profiles[key] = None if described is None else profile_model(described, spec.height, spec.width)
        return self._profiles[key]


def auto_choice(spec: RenderSpec, model: str, free: int, rule: DegreeRule) -> dict:
    """Strategy "auto"'s pick for one placement from ``free`` workers: the cost model's plan where the pool's rule
    has one, else patch bands at the rule's degree (one worker, "none", when bands do not pay or the family
    has none)."""
    own = getattr(spec, "auto_choice", None)  # a kind that chooses its own plans (videos: cluster.jobs.video)
    if own is not None:
        return own(model, free, rule)
    plan = rule.plan(spec, model, free) if hasattr(rule, "plan") else None
    if plan is not None:
        return plan
    degree = rule(spec, model, free) if "patch" in spec.model_family(model).strategies else 1
    return {"strategy": "patch" if degree > 1 else "none", "degree": degree, "cfg": False, "ring": 1}


def wanted_degree(spec: JobSpec, model: str, free: int, rule: DegreeRule) -> int | None:
    """Workers the job needs to start its next segment now; None: it cannot start with `free`.
    A fixed degree needs that many; "auto" asks the kind (images: the degree rule; videos: every free
    worker up to the stages the video can use)."""
    if not spec.parallel.auto:
        return spec.parallel.degree if spec.parallel.degree <= free else None
    return spec.auto_degree(model, free, rule) if free >= 1 else None


def choose_pool(
    spec: JobSpec,
    model: str,
    model_key: str,
    pools: dict[str, set[int]],
    book: WorkerBook,
    rules: dict[str, DegreeRule],
) -> tuple[str, int] | None:
    """(pool name, degree) to start the job's next segment in now, or None if no allowed pool has room.

    `pools` maps each pool the job's `device` allows, in the farm's order of preference, to its
    workers. The largest degree wins (an auto-degree job goes where most workers are free), then
    the pool with most free workers already holding the model, then the first pool listed."""
    best = None
    for order, (name, members) in enumerate(pools.items()):
        free = book.free & members
        degree = wanted_degree(spec, model, len(free), rules[name])
        if degree is None:
            continue
        warm = min(degree, sum(model_key in book.models[i] for i in free))
        key = (-degree, -warm, order)
        if best is None or key < best[0]:
            best = (key, name, degree)
    return None if best is None else (best[1], best[2])


def pools_to_pause(
    priority: int,
    needed: int,
    pools: dict[str, set[int]],
    free: set[int],
    running: list[RunningJob],
    already_pausing: set[str],
) -> list[str]:
    """`jobs_to_pause` across pools: the victims in the first allowed pool where pausing makes room;
    none if enough workers are already coming free in one of them."""
    plans = []
    for members in pools.values():
        inside = [r for r in running if set(r.workers) <= members]
        coming = len(free & members) + sum(len(r.workers) for r in inside if r.job_id in already_pausing)
        if coming >= needed:
            return []
        plans.append(jobs_to_pause(priority, needed, len(free & members), inside, already_pausing))
    return next((plan for plan in plans if plan), [])


def jobs_to_pause(
    priority: int, needed: int, free: int, running: list[RunningJob], already_pausing: set[str]
) -> list[str]:
    """Running jobs of lower priority to pause so that `needed` workers come free: the lowest
    priority first, the most recently submitted among equals. Empty if pausing cannot make room."""
    coming = free + sum(len(r.workers) for r in running if r.job_id in already_pausing)
    if coming >= needed:
        return []
    victims = sorted(
        (r for r in running if r.priority < priority and r.job_id not in already_pausing),
        key=lambda r: (r.priority, -r.submitted_at),
    )
    chosen = []
    for job in victims:
        chosen.append(job.job_id)
        coming += len(job.workers)
        if coming >= needed:
            return chosen
    return []
