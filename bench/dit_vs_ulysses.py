"""Our DiT row bands against diffusers' own context parallelism (Ulysses) on the same Wan transformer.

    .venv/bin/python -m bench.dit_vs_ulysses --latent 128 --layers 2 --steps 3 --repeats 5

One ``WanTransformer3DModel`` (random weights, seed 0, float32, eval) denoises one latent with a
flow-matching Euler loop, timed per denoising step, in four configurations run in turn (A, B, C, D,
A, ...; ``bench.common.alternate``):

- ``1 worker``: one process, one torch thread (this process), the analogue of one GPU;
- ``bands 2x1``: two worker processes of one thread each over a gloo group, our row bands in sync
  mode (``pipelines.families.wan.patch.parallelize_wan_patch``, exact): each worker keeps its band of the
  latent for the whole loop and the caller gathers once at the end (that gather's time is spread
  over the loop's steps);
- ``ulysses 2x1``: the same two workers running diffusers' ``enable_parallelism`` with
  ``ContextParallelConfig(ulysses_degree=2)`` through ``parallel.sequence.parallelize_sequence`` (exact):
  the model's ``_cp_plan`` splits the sequence at block 0, attention all-to-alls heads, and ``proj_out``
  gathers the full output every step;
- ``1 process x 2 threads``: the honest CPU baseline.

The two worker processes persist across rounds, fed commands through queues (``bench.strategy_workers``,
shared with ``bench.image_dit_strategies``). Both parallel outputs are checked against the one-worker output
(max abs error of the final latent).
Speed figures are medians over ``--repeats`` rounds after ``--warmup`` rounds. Writes the
"dit-vs-ulysses" section of BENCHMARKS.md unless ``--no-write``.

On a CPU-only torch, diffusers 0.42's ``enable_parallelism`` raises ``ZeroDivisionError`` while
picking the device (``rank % torch.accelerator.device_count()`` with 0 accelerators);
``parallel.sequence.cpu`` works around it (and the benchmark reports the note it leaves); the rest (the
Ulysses attention, the split and gather hooks) is diffusers' own code, unchanged. The model is
called with ``return_dict=False``: with the default ``return_dict=True`` the gather hook on the
whole model raises "Expected output to be a tensor or a list/tuple of tensors".
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from bench.common import alternate, median, provenance, write_section
from bench.strategy_workers import Run, Timed, WorkerPool, timed_loop
from parallel.patch.bands import band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from parallel.sequence import SequenceConfig, SequenceHandle, parallelize_sequence
from pipelines.families.wan.patch import parallelize_wan_patch

TEXT_DIM = 64
TEXT_LEN = 16


@dataclass
class BenchConfig:
    """What the benchmark builds and runs; the same on every process."""

    latent: int = 128
    """Latent height and width (before the 2x2 patchify): 128 gives a 64x64 = 4096-token image, about
    0.9 s of CPU time per forward on one thread of the 2-core EPYC dev machine with the defaults."""
    frames: int = 1
    """Latent frames (1 = an image)."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 4
    """Attention heads; Ulysses needs them divisible by the worker count."""
    head_dim: int = 64
    """Channels per head."""
    steps: int = 3
    """Denoising steps per timed run."""
    workers: int = 2
    """Parallel degree for both strategies."""


def build_model(cfg: BenchConfig) -> WanTransformer3DModel:
    torch.manual_seed(0)
    dim = cfg.heads * cfg.head_dim
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=64,
        ffn_dim=4 * dim,
        num_layers=cfg.layers,
        rope_max_seq_len=max(64, cfg.latent),
    )
    return model.eval()


def inputs(cfg: BenchConfig) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    latent = torch.randn(1, 16, cfg.frames, cfg.latent, cfg.latent, generator=g)
    text = torch.randn(1, TEXT_LEN, TEXT_DIM, generator=g)
    return latent, text


def denoise(
    model: torch.nn.Module, latent: torch.Tensor, text: torch.Tensor, steps: int
) -> tuple[torch.Tensor, float]:
    """(final latent, seconds per step) of a flow-matching Euler loop."""
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(steps)
    out, times = timed_loop(
        lambda x, t: model(x, t.expand(x.shape[0]), text, return_dict=False)[0], latent, sched
    )
    return out, times.mean_seconds()


def enable_ulysses(model: WanTransformer3DModel, degree: int) -> tuple[SequenceHandle, str]:
    """diffusers' ``enable_parallelism`` with Ulysses over the world; the handle and a note on what it took."""
    handle = parallelize_sequence(model, dist.group.WORLD, SequenceConfig(ulysses=degree))
    return handle, "; ".join(handle.notes) or "enable_parallelism ran as is"


def _tokens_hook(model: WanTransformer3DModel, seen: list[int]) -> None:
    """Record the sequence length block 0's self-attention sees: proof of how the tokens were split.
    (Hooked on ``attn1``, inside the block: diffusers' split hook replaces the block's forward.)"""
    model.blocks[0].attn1.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))


def _busiest_peer(sent: dict[str, dict[int, int]]) -> float:
    """MiB this worker sent its busiest peer, all kinds together."""
    per_peer: dict[int, int] = {}
    for peers in sent.values():
        for peer, nbytes in peers.items():
            per_peer[peer] = per_peer.get(peer, 0) + nbytes
    return max(per_peer.values(), default=0) / 2**20


# ---- worker set-up (bench.strategy_workers runs it in each worker process) ---------------------------------
def setup_worker(rank: int, world: int, cfg: BenchConfig) -> tuple[dict[str, Run], str]:
    """Both parallel models on this worker, and their runs: ``bands`` and ``ulysses``."""
    group = dist.group.WORLD
    latent, text = inputs(cfg)
    bounds = band_bounds(cfg.latent, world, align=2)
    bands = build_model(cfg)
    band_tokens: list[int] = []
    _tokens_hook(bands, band_tokens)
    handle = parallelize_wan_patch(bands, group, PatchConfig("sync"))
    ulysses: WanTransformer3DModel | None = build_model(cfg)
    ulysses_tokens: list[int] = []
    try:
        ulysses_handle, note = enable_ulysses(ulysses, world)
        _tokens_hook(ulysses, ulysses_tokens)
    except Exception:  # noqa: BLE001 - recorded in the report instead
        note = "Ulysses could not be enabled:\n" + traceback.format_exc()
        ulysses = None

    def run_bands() -> Timed:
        handle.reset()
        band, seconds = denoise(bands, slice_band(latent, bounds, rank), text, cfg.steps)
        started = time.perf_counter()
        out = gather_bands(band, group, bounds)  # once per loop, charged to its steps
        seconds += (time.perf_counter() - started) / cfg.steps
        figures = {
            "seconds": seconds,
            "mib": _busiest_peer(handle.bytes_sent.last_step),
            "tokens": band_tokens[-1],
        }
        return Timed(figures, out)

    def run_ulysses() -> Timed:
        if ulysses is None:
            return Timed({"seconds": float("nan")}, None)
        out, seconds = denoise(ulysses, latent, text, cfg.steps)
        figures = {"seconds": seconds, "mib": _busiest_peer(ulysses_handle.bytes_sent.last_step)}
        return Timed({**figures, "tokens": ulysses_tokens[-1]}, out)

    return {"bands": run_bands, "ulysses": run_ulysses}, note


# ---- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for field, default in vars(BenchConfig()).items():
        ap.add_argument(f"--{field.replace('_', '-')}", type=int, default=default)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for one worker answer")
    ap.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = ap.parse_args(argv)
    cfg = BenchConfig(**{f: getattr(args, f) for f in vars(BenchConfig())})
    if cfg.heads % cfg.workers:
        raise SystemExit(
            f"--heads: Ulysses needs heads divisible by --workers, got {cfg.heads} and {cfg.workers}"
        )
    if cfg.latent % 2:
        raise SystemExit(f"--latent: must be even (2x2 patches), got {cfg.latent}")

    model = build_model(cfg)
    single_tokens: list[int] = []
    _tokens_hook(model, single_tokens)
    latent, text = inputs(cfg)
    reference: dict[str, torch.Tensor] = {}

    def single(threads: int) -> float:
        torch.set_num_threads(threads)
        out, seconds = denoise(model, latent, text, cfg.steps)
        reference.setdefault("out", out)
        return seconds

    w = cfg.workers
    with WorkerPool(w, setup_worker, (cfg,), args.timeout) as workers:
        last: dict[str, Timed] = {}

        def parallel(kind: str) -> float:
            last[kind] = workers.run(kind)
            return last[kind].figures["seconds"]

        runs = {
            "1 worker": lambda: single(1),
            f"bands {w}x1": lambda: parallel("bands"),
            f"ulysses {w}x1": lambda: parallel("ulysses"),
            "1 process x 2 threads": lambda: single(2),
        }
        times = alternate(runs, args.repeats, args.warmup)
        note = workers.note
    torch.set_num_threads(1)

    ref = reference["out"]
    base = median(times["1 worker"])
    tokens = cfg.frames * (cfg.latent // 2) ** 2
    rows = []
    for name, values in times.items():
        kind = name.split()[0] if name.split()[0] in ("bands", "ulysses") else None
        timed = last[kind] if kind else Timed({"tokens": single_tokens[-1], "mib": 0.0}, ref)
        err = "n/a" if timed.output is None else f"{(timed.output - ref).abs().max().item():.2e}"
        # bands: K/V; Ulysses: the last forward's all-to-alls and output gather; to the busiest peer
        sent = f"{timed.figures['mib']:.2f}" if "mib" in timed.figures else "n/a"
        shown_tokens = int(timed.figures["tokens"]) if "tokens" in timed.figures else "n/a"
        m = median(values)
        rows.append(f"| {name} | {m:.3f} | {base / m:.2f}x | {err} | {shown_tokens} | {sent} |")
    command = "python -m bench.dit_vs_ulysses " + " ".join(argv if argv is not None else sys.argv[1:])
    body = (
        "## DiT bands vs diffusers' Ulysses context parallelism (Wan transformer, CPU)\n\n"
        + provenance(command)
        + f"- model: WanTransformer3DModel, {cfg.layers} blocks, {cfg.heads} heads x {cfg.head_dim}, "
        f"latent {cfg.frames}x{cfg.latent}x{cfg.latent} -> {tokens} tokens, float32, random weights\n"
        f"- {cfg.steps} flow-matching Euler steps per run; median of {args.repeats} alternating rounds "
        f"after {args.warmup} warm-up\n"
        f"- Ulysses: ContextParallelConfig(ulysses_degree={cfg.workers}); {note}\n"
        "- max abs err: final latent against the 1-worker loop; tokens: sequence length block 0 sees "
        "on one rank; MiB per step per peer: what one worker sends one peer per step (bands: K/V, counted in "
        "parallel.comm; Ulysses: diffusers' all-to-alls and output gather, counted by parallel.sequence.traffic)\n\n"
        "| configuration | s/step (median) | speed-up vs 1 worker | max abs err | tokens per rank | "
        "MiB per step per peer |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    if args.no_write:
        print(body)
    else:
        write_section("dit-vs-ulysses", body)
        print(body)
    return body


if __name__ == "__main__":
    main()
