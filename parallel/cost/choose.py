"""degree=auto: the fastest patch-parallel degree that fits in memory, given the free workers.

    choose_degree(model, height, width, free_workers, device="cpu-core", link="loopback") -> int

A larger degree is taken only when the cost model predicts it at least ``min_gain`` faster per step than
the best smaller one, so that workers are not spent for a rounding error. Degrees that cannot split the
latent (each band needs ``row_align`` rows) or do not fit the device's memory are skipped; when none fits,
the degree with the smallest per-worker memory is returned (the scheduler may still refuse the job).
"""

from __future__ import annotations

from parallel.cost.models import ModelSpec, get_model_spec
from parallel.cost.predict import Prediction, cached_profile, predict, predict_model
from parallel.cost.profile import ModelProfile
from parallel.cost.specs import load_specs


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
    """Predictions for every candidate degree (see ``candidate_degrees``)."""
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
    bands for image models, frame-pipeline stages for video models ("video-dit", e.g. Wan).

    ``model``: a registered name ("builtin-image", "sdxl", "pixart-alpha", "wan2.1-1.3b", ...), a
    ``ModelSpec``, or a ``ModelProfile`` already taken at this size (then height/width/frames are unused).
    ``device`` / ``link``: names in ``parallel/cost/specs.yaml`` (or in ``specs_yaml``).
    ``kv_source`` / ``stale_dtype``: the job's ``PatchConfig`` exchange options (image models).
    """
    if free_workers < 1:
        raise ValueError(f"free_workers: need at least 1, got {free_workers}")
    if isinstance(model, ModelProfile):
        profile = model
    else:
        spec = get_model_spec(model)
        if spec.kind == "video-dit":
            ranked = _rank_stages(spec, height, width, frames, free_workers, device, link, steps, specs_yaml)
            return _pick(ranked, min_gain)
        dtype = load_specs(*([specs_yaml] if specs_yaml else [])).device(device).dtype
        profile = cached_profile(spec.name, height, width, frames, 2, dtype)
    ranked = rank_degrees(
        profile,
        free_workers,
        device,
        link,
        "patch",
        mode,
        steps,
        specs_yaml=specs_yaml,
        kv_source=kv_source,
        stale_dtype=stale_dtype,
    )
    return _pick(ranked, min_gain)


def _pick(ranked: list[Prediction], min_gain: float) -> int:
    """Fastest fitting degree, a larger one only when ``min_gain`` faster; else the smallest memory."""
    fitting = [p for p in ranked if p.fits]
    if not fitting:
        return min(ranked, key=lambda p: p.memory_bytes).degree
    best = fitting[0]
    for p in fitting[1:]:
        if p.mean_step_s < best.mean_step_s * (1.0 - min_gain):
            best = p
    return best.degree


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
