"""Predict step time, speedup and per-worker memory for (strategy, degree, model, size, device, link).

Compute: a worker's share of the forward's FLOPs (``compute_share``: bands split the image's tokens and
every band computes the text whole; sequence parallelism splits both; per-sample embeddings run whole
everywhere) over the device's effective FLOP/s (peak x efficiency, times ``corun_efficiency`` when more than
one worker of a host computes at once), plus a fixed cost per dispatched op, which does not shrink with the
share (every worker launches every kernel); on devices that queue kernels ahead (GPUs) the step takes the
larger of the two instead of their sum.

Efficiency falloff: a kernel of ``f`` FLOPs runs at ``efficiency x f / (f + half_efficiency_flops)`` (the
device's constant, ``specs.yaml``), so the device time of ``F`` FLOPs in ``k`` kernels is
``(F + k x half_efficiency_flops) / (peak x efficiency)``: as a worker's share shrinks, its kernels shrink
with it and run further from the peak, while their number stays.

Communication: ``bytes / bandwidth + messages x latency`` of the strategy's traffic
(``parallel.cost.traffic``). Traffic that blocks (sync exchanges, the CFG swap) adds to the step. Traffic
that may overlap (displaced exchanges, pipeline sends) is hidden behind compute when the link has copy
engines (``overlaps_compute``), so only what exceeds the compute shows; on a link that takes the compute's
cores (gloo on CPU) it adds in full, which is why displaced is no faster than sync on CPU workers.

Displaced patch parallelism runs its first ``warmup_steps`` synchronously; ``Prediction.step_s`` is the
steady-state step and ``Prediction.mean_step_s`` the average over ``steps``.

Memory per worker: the parameters it holds, its share of the activation peak, the gathered K/V of the
largest attention layer (every band needs all of it at once) and, in displaced mode, the previous step's
K/V of every attention layer from the other bands (DistriFusion's all-gather keeps every band's). Under
sequence parallelism: the Q, K, V and output of the largest attention layer for a Ulysses share of the heads
over the whole sequence, and the K/V the ring gathers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from parallel.cost.models import VIDEO_KINDS, ModelSpec, build_vae_decoder_meta, get_model_spec
from parallel.cost.profile import ModelProfile, profile_model, profile_module
from parallel.cost.specs import DeviceSpec, LinkSpec, load_specs
from parallel.cost.traffic import Traffic, stale_factor, strategy_traffic
from parallel.patch.traffic import attention_bytes


@dataclass
class Prediction:
    """Predicted cost of one configuration."""

    strategy: str
    """"none", "patch", "cfg", "sequence", "sequence-cfg" or "frame-pipeline"."""
    degree: int
    """Workers."""
    mode: str
    """Patch mode: "sync" or "displaced"."""
    compute_s: float
    """Seconds one worker computes per step."""
    comm_s: float
    """Seconds of communication the step waits for (after overlap)."""
    step_s: float
    """Steady-state seconds per step."""
    mean_step_s: float
    """Seconds per step averaged over the run (displaced warmup included)."""
    speedup: float
    """Single-worker steady step time over this one's mean step time (same device)."""
    memory_bytes: float
    """Peak bytes one worker holds."""
    fits: bool
    """Whether ``memory_bytes`` fits the device."""
    traffic: Traffic = field(repr=False, default_factory=lambda: Traffic("none", 1))
    """What each worker sends per step."""
    ring: int = 1
    """Sequence parallelism: the Ring degree (the rest of a branch's workers are Ulysses)."""


@lru_cache(maxsize=64)
def cached_profile(
    model: str, height: int, width: int, frames: int = 1, batch: int | None = 2, dtype: str = ""
) -> ModelProfile:
    """``profile_model`` memoised by its arguments (profiling SDXL takes seconds); ``batch=None``: the model's
    default (``ModelSpec.batch``)."""
    return profile_model(model, height, width, frames, batch, getattr(torch, dtype) if dtype else None)


@lru_cache(maxsize=16)
def vae_decode_flops(model: str, height: int, width: int) -> tuple[int, int]:
    """(FLOPs, ops) of the model's VAE decode of one image at this size, 0 when it names no VAE (or is a video
    model: ``parallel.cost.video`` prices its decode block by block)."""
    spec = get_model_spec(model)
    vae = build_vae_decoder_meta(spec) if spec.kind not in VIDEO_KINDS else None
    if vae is None:
        return 0, 0
    latent = torch.empty(spec.latent_shape(1, height, width), device="meta", dtype=getattr(torch, spec.dtype))

    class Decode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vae = vae

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.vae.decode(z).sample

    prof = profile_module(Decode(), (latent,), {})
    return prof.flops, prof.ops


def compute_seconds(flops: float, ops: int, device: DeviceSpec, corun: bool) -> float:
    """Seconds to run ``flops`` in ``ops`` dispatched ops on one worker (each kernel ``half_efficiency_flops``
    further from the peak, see the module docstring)."""
    rate = device.flops * (device.corun_efficiency if corun else 1.0)
    busy = (flops + ops * device.half_efficiency_flops) / rate
    if device.async_launch:
        return max(busy, ops * device.op_overhead_s)
    return busy + ops * device.op_overhead_s


def _step(compute: float, traffic: Traffic, link: LinkSpec) -> tuple[float, float]:
    """(step seconds, communication seconds the step waits for)."""
    blocking = link.seconds(*traffic.blocking())
    hidden = link.seconds(*traffic.hidden()) if traffic.overlapped else 0.0
    waited = blocking + (max(0.0, hidden - compute) if link.overlaps_compute else hidden)
    return compute + waited, waited


ULYSSES_OPS = 17
"""Ops diffusers 0.42's Ulysses adds per attention layer (the all-to-alls of Q, K, V and the output with their
copies and waits), counted on a tiny Flux over gloo (tests/cost/test_traffic_sequence.py)."""
RING_OPS = (7, 13)
"""Ops its Ring adds per attention layer: a fixed part (the K/V gather and its unpacking) and a part per
further ring worker (that worker's attention and the log-sum-exp merge), counted likewise."""


def sequence_ops(profile: ModelProfile, strategy: str, degree: int, ring: int = 1) -> int:
    """Ops sequence parallelism dispatches per forward beyond the model's own: on a step bound by eager
    dispatch (H100/H200 at small sizes) they cost as much as FLOPs elsewhere."""
    if not strategy.startswith("sequence") or degree <= 1:
        return 0
    workers = degree // (2 if strategy == "sequence-cfg" else 1)
    ulysses = workers // ring
    per_layer = ULYSSES_OPS * (ulysses > 1) + (RING_OPS[0] + RING_OPS[1] * (ring - 1)) * (ring > 1)
    return per_layer * len(profile.attention.tokens)


def compute_share(profile: ModelProfile, strategy: str, degree: int) -> float:
    """Fraction of the forward's FLOPs (and of its activations) one worker runs: bands split the image's
    FLOPs and run the text's whole on every band; sequence parallelism splits both; the FLOPs over no token
    (embeddings, adaLN modulations) run whole on every worker; a CFG split halves the batch first; a
    frame-pipeline stage runs 1/degree of the layers."""
    if strategy in ("none", "frame-pipeline", "steps") or degree <= 1:
        # a frame-pipeline stage runs its share of the layers; ParaStep, one whole forward per round of `degree` steps
        return 1.0 / degree if strategy in ("frame-pipeline", "steps") else 1.0
    total = profile.flops or 1
    image, text, shared = profile.image_flops / total, profile.text_flops / total, profile.shared_flops / total
    if strategy == "patch":
        return image / degree + text + shared
    if strategy == "cfg":
        return (image / (degree // 2) + text + shared) / 2
    if strategy == "sequence":
        return (image + text) / degree + shared
    if strategy == "sequence-cfg":
        return ((image + text) / (degree // 2) + shared) / 2
    raise ValueError(f"strategy: unknown inference strategy {strategy!r}")


def predict(
    profile: ModelProfile,
    strategy: str,
    degree: int,
    device: DeviceSpec | str,
    link: LinkSpec | str,
    mode: str = "sync",
    scheme: str = "neighbour",
    steps: int = 50,
    warmup_steps: int = 0,
    serial_s: float = 0.0,
    specs_yaml: str | None = None,
    pipeline_items: int = 0,
    kv_source: str = "kv",
    stale_dtype: str | None = None,
    ring: int = 1,
    ring_overlap: bool = False,
) -> Prediction:
    """Predict one configuration from a profile (see ``parallel.cost.profile``).

    ``serial_s``: seconds of per-render work nobody splits (e.g. the VAE decode), spread over the ``steps``
    steps in ``mean_step_s`` and ``speedup``.
    Frame pipeline: the profile is of one frame block, a step is one work item (a block's denoising step
    through every stage), and ``pipeline_items`` (blocks x steps) adds the fill and drain of the pipeline:
    ``items + degree - 1`` ticks for ``items`` items.
    Patch and CFG: ``kv_source`` and ``stale_dtype`` as in ``PatchConfig`` (what self-attention exchanges,
    the precision of what displaced steps send and keep).
    Sequence: ``ring`` workers of each branch form a ring, the rest Ulysses (``ring_overlap``: a ring that
    passes K/V during the attention; diffusers' gathers them first).
    """
    specs = load_specs(*([specs_yaml] if specs_yaml else []))
    device, link = specs.device(device), specs.link(link)
    degree = max(1, degree)
    if degree == 1:
        strategy = "none"
    traffic = strategy_traffic(
        profile, strategy, degree, mode, scheme, kv_source, stale_dtype, ring=ring, ring_overlap=ring_overlap
    )
    share = compute_share(profile, strategy, degree)
    ops = profile.ops * share if strategy in ("frame-pipeline", "steps") else profile.ops  # its layers, or its steps
    ops += sequence_ops(profile, strategy, degree, ring)
    compute = compute_seconds(profile.flops * share, ops, device, corun=degree > 1)
    step, waited = _step(compute, traffic, link)
    mean = step
    if strategy == "frame-pipeline" and pipeline_items:
        mean = step * (pipeline_items + degree - 1) / pipeline_items
    if strategy in ("patch", "cfg") and (mode == "displaced" or scheme == "allgather") and warmup_steps:
        sync_traffic = strategy_traffic(profile, strategy, degree, "sync", "neighbour", kv_source)
        sync_step, _ = _step(compute, sync_traffic, link)
        warm = min(warmup_steps, steps)
        mean = (warm * sync_step + (steps - warm) * step) / steps
    mean += serial_s / steps
    single = compute_seconds(profile.flops, profile.ops, device, corun=False) + serial_s / steps
    memory = _memory(profile, strategy, degree, mode, scheme, share, kv_source, stale_dtype, ring)
    return Prediction(
        strategy=strategy,
        degree=degree,
        mode=mode,
        compute_s=compute,
        comm_s=waited,
        step_s=step,
        mean_step_s=mean,
        speedup=single / mean,
        memory_bytes=memory,
        fits=memory <= device.memory_bytes,
        traffic=traffic,
        ring=ring if strategy.startswith("sequence") else 1,
    )


def _memory(
    profile: ModelProfile,
    strategy: str,
    degree: int,
    mode: str,
    scheme: str,
    share: float,
    kv_source: str = "kv",
    stale_dtype: str | None = None,
    ring: int = 1,
) -> float:
    kv = profile.patch.kv_bytes
    batch_fraction = 0.5 if strategy in ("cfg", "sequence-cfg") else 1.0
    params = profile.param_bytes / (degree if strategy == "frame-pipeline" else 1)
    acts = profile.activation_peak_bytes * share
    if strategy == "steps":  # every worker runs whole forwards, and holds a round's gathered noises
        acts = profile.activation_peak_bytes + degree * (profile.output_bytes or profile.latent_bytes)
    if strategy.startswith("sequence") and degree > 1:
        workers = int(degree * batch_fraction)
        shapes = profile.attention
        gathered = [
            (qkvo / (workers // ring) + kv_ * (ring - 1) / workers) * batch_fraction
            for qkvo, kv_ in zip(shapes.qkvo_bytes, shapes.kv_bytes)
        ]
        acts += max(gathered, default=0.0)
    if strategy in ("patch", "cfg") and degree > 1:
        acts += max(kv, default=0) * batch_fraction  # one layer's gathered K/V
        if mode == "displaced" or scheme == "allgather":
            # stale K/V (or attention inputs) of every layer: ours keeps the other bands' only, an
            # all-gather every band's
            own_rows = 2.0 / degree if strategy == "cfg" else 1.0 / degree  # a CFG branch has degree/2 bands
            held = 1.0 if scheme == "allgather" else 1.0 - own_rows
            acts += sum(attention_bytes(profile.patch, kv_source)) * batch_fraction * held * stale_factor(profile, mode, stale_dtype)
    return params + acts


def predict_model(
    model: str | ModelSpec,
    height: int,
    width: int,
    strategy: str,
    degree: int,
    device: str = "cpu-core",
    link: str = "loopback",
    mode: str = "sync",
    frames: int = 1,
    steps: int = 50,
    warmup_steps: int = 0,
    include_vae: bool = False,
    scheme: str = "neighbour",
    specs_yaml: str | None = None,
    block_latent_frames: int = 8,
    ring: int = 1,
    batch: int | None = None,
) -> Prediction:
    """``predict`` for a registered model by name, profiled at this size in the device's dtype (``batch``:
    2 is CFG batched; None: the model's default, ``ModelSpec.batch``). ``include_vae`` adds the serial VAE
    decode to the run. The frame pipeline profiles one block of ``block_latent_frames`` latent frames
    (FramePipelineConfig's default 8) and runs ``ceil(latent frames / block) x steps`` work items.
    ``ring``: sequence parallelism's Ring degree."""
    spec = get_model_spec(model)
    dev = load_specs(*([specs_yaml] if specs_yaml else [])).device(device)
    items = 0
    if strategy == "frame-pipeline":
        latent_frames = (frames - 1) // spec.temporal_scale + 1
        block = min(block_latent_frames, latent_frames)
        items = -(-latent_frames // block) * steps
        frames = (block - 1) * spec.temporal_scale + 1
    profile = cached_profile(spec.name, height, width, frames, batch or spec.batch, dev.dtype)
    serial = 0.0
    if include_vae:
        flops, ops = vae_decode_flops(spec.name, height, width)
        serial = compute_seconds(flops, ops, dev, corun=False)
    return predict(
        profile,
        strategy,
        degree,
        dev,
        link,
        mode,
        scheme,
        steps=steps,
        warmup_steps=warmup_steps,
        serial_s=serial,
        specs_yaml=specs_yaml,
        pipeline_items=items,
        ring=ring,
    )


def predict_training(
    profile: ModelProfile,
    strategy: str,
    degree: int,
    device: DeviceSpec | str,
    link: LinkSpec | str,
    micro_batches: int,
    cut_bytes: float = 0.0,
    backward_factor: float = 2.0,
    specs_yaml: str | None = None,
) -> float:
    """Training samples per second: one worker, ``"data"`` parallel, or a ``"pipeline"`` of ``degree``
    stages (1F1B, ``micro_batches`` per optimizer step, ``profile.batch`` samples per micro-batch).

    A backward costs ``backward_factor`` forwards. Data parallel all-reduces the gradients (ring: each
    worker sends 2(n-1)/n of the parameter bytes). The pipeline takes ``micro_batches + degree - 1`` stage
    slots per step, each a 1/degree share of one micro-batch's forward and backward plus sending
    ``cut_bytes`` of activations one way and their gradients back; stages are taken as balanced.
    """
    specs = load_specs(*([specs_yaml] if specs_yaml else []))
    device, link = specs.device(device), specs.link(link)
    flops = profile.flops * (1 + backward_factor)
    ops = int(profile.ops * (1 + backward_factor))
    samples = profile.batch * micro_batches
    if strategy == "none" or degree <= 1:
        return samples / (micro_batches * compute_seconds(flops, ops, device, corun=False))
    if strategy == "data":
        step = micro_batches * compute_seconds(flops, ops, device, corun=True)
        step += link.seconds(2 * (degree - 1) / degree * profile.param_bytes, 2 * (degree - 1))
        return degree * samples / step
    if strategy == "pipeline":
        slot = compute_seconds(flops / degree, ops // degree, device, corun=True)
        sends = link.seconds(2 * cut_bytes, 2)
        slot = slot + sends if not link.overlaps_compute else max(slot, sends)
        return samples / ((micro_batches + degree - 1) * slot)
    raise ValueError(f"strategy: expected 'none', 'data' or 'pipeline', got {strategy!r}")
