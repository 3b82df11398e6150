"""The image DiT families' parallel strategies side by side on 2 CPU workers: our patch bands, diffusers' context
parallelism (Ulysses, Ring) and CFG parallelism, against one worker, on a Flux-layout and an SD3.5-layout
transformer.

    python -m bench.image_dit_strategies --model all --size 1024 --steps 5 --repeats 5 --warmup 1

Each model (random weights, seed 0, float32, eval; diffusers' ``FluxTransformer2DModel`` with double- and
single-stream blocks, or ``SD3Transformer2DModel`` with dual attention and RMS qk-norm) denoises one latent with
its family's flow-matching Euler loop (the family's ``set_timesteps`` and ``denoise``: Flux's sigmas, shift and
2x2 packing, as a render runs it), timed per step, in these configurations, run in turn (A, B, C, ..., A, ...;
``bench.common.alternate``):

- ``1 worker``: this process, one torch thread, the analogue of one GPU;
- ``bands sync 2`` and ``bands displaced 2``: two worker processes of one thread each over a gloo group,
  the family's patch plan (``pipelines.families.<family>.patch`` through ``parallel.patch.parallelize_patch``);
  each worker keeps its band of rows for the whole loop and they gather once at the end (that gather's time is
  charged to the timed steps). Both rows take the CLI's patch defaults (``configs/parallel/patch.yaml``:
  warm-up steps, stale dtype, K/V source), the sync row with ``mode=sync``;
- ``ulysses 2`` and ``ring 2``: the same two workers running diffusers' context parallelism through
  ``parallel.sequence.parallelize_sequence`` (every worker keeps the whole latent; the model's ``_cp_plan``
  splits its tokens and gathers its output every step); a model class without a plan gets a row saying so;
- ``cfg 2``: each worker runs one guidance branch on the whole latent and the partners swap their noise
  (``parallel.patch.cfg``, through the render's own ``split_cfg_predictor``). SD3.5 renders with CFG, so all
  its rows run both branches (batched, as diffusers does); Flux is guidance-distilled, so its rows run one
  branch, and CFG parallelism is measured with Flux's true CFG on, against ``1 worker (true CFG)``;
- ``1 process x 2 threads``: the honest CPU baseline.

Speeds are medians over ``--repeats`` rounds after ``--warmup`` rounds. A run's seconds per step are the slowest
worker's, over the steps after the patch config's warm-up steps (the steady state a render of tens of steps spends
nearly all its time in; every configuration is timed over the same steps) and, beside them, over the whole loop.
Every exact row is checked against the one-worker final latent (max abs error); the displaced rows' PSNR against
it is ``20 log10(peak / RMSE)`` over the whole latent, the peak being the reference latent's value range (max -
min). Bytes are what one worker sends per timed step (the busier worker): patch exchanges counted in
``parallel.comm``, diffusers' collectives in ``parallel.sequence.traffic``, the CFG noise swap in its ``Comm``;
the bands' one gather at the end of the loop is not counted.

Writes the "image-dit-strategies-<model>" sections of BENCHMARKS.md unless ``--no-write``; the Flux section
states the issue's two targets with their measured figures.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import diffusers
import torch
import torch.distributed as dist
import yaml
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline
from torch import nn

from bench.common import alternate, median, provenance, write_section
from bench.strategy_workers import LoopTimes, Run, Timed, WorkerPool, timed_loop
from parallel.comm import BytesSent
from parallel.patch.bands import Bounds, band_bounds, gather_bands, slice_band
from parallel.patch.cfg import make_cfg_groups
from parallel.patch.config import PatchConfig
from parallel.patch.parallelize import parallelize_patch
from parallel.patch.runtime import PatchHandle
from parallel.sequence import SequenceConfig, parallelize_sequence
from pipelines.families import Conditioning, ModelFamily
from pipelines.families.flux import FLUX
from pipelines.families.sd3 import SD3
from pipelines.sampling import NoisePredictor, batched_cfg_predictor
from runtime.jobs.image_patch import split_cfg_predictor

WORKERS = 2
"""Workers of every parallel configuration: the issue's targets are at 2 (CFG parallel is then 1 band x 2
branches)."""
VAE_FACTOR = 8
"""Pixels per latent row in FLUX.1's and SD3's VAEs: ``--size`` 1024 is a 128x128 latent."""
PATCH_DEFAULTS = Path(__file__).resolve().parent.parent / "configs" / "parallel" / "patch.yaml"
"""The CLI's patch-parallel default (``tessera render parallel=patch``): what the band rows run."""
NOISE_SEED = 7
TEXT_SEED = 3


@dataclass
class BenchConfig:
    """One model's benchmark: what every process builds and runs (the same on all of them)."""

    model: str
    """"flux" (a FLUX.1-layout ``FluxTransformer2DModel``) or "sd3" (an SD3.5-medium-layout ``SD3Transformer2DModel``)."""
    size: int = 1024
    """Image height and width in pixels; the latent is ``size / 8`` a side (1024: 128x128, 4096 image tokens)."""
    layers: int = 2
    """Flux: double-stream (MMDiT) blocks; SD3: joint blocks."""
    extra_layers: int = 4
    """Flux: single-stream blocks; SD3: how many of the first joint blocks are dual-attention blocks (SD3.5
    medium's layout: 13 of 24)."""
    heads: int = 4
    """Attention heads (Ulysses gives each worker half of them)."""
    head_dim: int = 128
    """Channels per head: FLUX.1's 128, SD3.5's 64."""
    text_tokens: int = 512
    """Prompt tokens beside the image tokens: the pipeline's own default (FluxPipeline: T5 at 512; SD3: CLIP's 77
    and T5 at 256)."""
    steps: int = 5
    """Denoising steps per timed loop (at least the patch config's warm-up steps + 1)."""
    kv_source: str = "input"
    """What the bands exchange for attention ("kv" or "input"): the CLI's default unless ``--kv-source``."""
    warmup_steps: int = 2
    """Synchronous steps before displaced mode starts: the CLI's default; the steps timed start after them."""
    stale_dtype: str | None = "float16"
    """Precision displaced steps exchange and keep stale activations in: the CLI's default."""

    def patch(self, mode: str) -> PatchConfig:
        """The band rows' patch config (the CLI's defaults) in ``mode``."""
        return PatchConfig(
            mode=mode, warmup_steps=self.warmup_steps, stale_dtype=self.stale_dtype, kv_source=self.kv_source
        )


def _call_default(pipeline: type, name: str) -> object:
    """The default of ``name`` in the pipeline's ``__call__``: what a direct call uses."""
    return inspect.signature(pipeline.__call__).parameters[name].default


# ---- the two model layouts --------------------------------------------------------------------------
class ModelBench:
    """What differs between the benchmarked models: their layout, family, conditioning and guidance."""

    name: str
    title: str
    family: ModelFamily
    defaults: dict[str, int]
    """``BenchConfig`` fields this layout sets unless the command line does."""
    guided: bool
    """Whether every row runs classifier-free guidance (both branches)."""

    def build(self, cfg: BenchConfig) -> nn.Module:
        raise NotImplementedError

    def describe(self, cfg: BenchConfig) -> str:
        raise NotImplementedError

    def scheduler_config(self) -> dict:
        raise NotImplementedError

    def conditioning(self, model: nn.Module, cfg: BenchConfig, guided: bool) -> Conditioning:
        raise NotImplementedError

    def check(self, cfg: BenchConfig) -> None:
        """Refuse settings this layout cannot run, naming the option."""
        unit = VAE_FACTOR * 2
        if cfg.size < 2 * unit or cfg.size % unit:
            raise SystemExit(
                f"--size: must be a multiple of {unit} (2x2 tokens of latent pixels), at least {2 * unit}"
            )
        for name in ("layers", "heads", "head_dim", "text_tokens"):
            if getattr(cfg, name) < 1:
                raise SystemExit(f"--{name.replace('_', '-')}: must be at least 1, got {getattr(cfg, name)}")
        if cfg.steps <= cfg.warmup_steps:
            raise SystemExit(
                f"--steps: the loop times the steps after the patch config's {cfg.warmup_steps} warm-up steps, "
                f"so it needs more than {cfg.warmup_steps}, got {cfg.steps}"
            )

    # -- shared by every process ----------------------------------------------------------------------------
    def stand_in_pipe(self, model: nn.Module) -> SimpleNamespace:
        """What the family's hooks read of a pipeline: its denoiser and its VAE factor."""
        return SimpleNamespace(**{self.family.denoiser: model}, vae_scale_factor=VAE_FACTOR)

    def latent(self, model: nn.Module, cfg: BenchConfig) -> torch.Tensor:
        """The initial noise at the family's latent shape (the whole latent; bands slice it)."""
        shape = self.family.latent_shape(self.stand_in_pipe(model), cfg.size, cfg.size)
        return torch.randn(shape, generator=torch.Generator().manual_seed(NOISE_SEED))

    def scheduler_factory(self, model: nn.Module, cfg: BenchConfig) -> Callable[[], object]:
        """A fresh flow-matching Euler scheduler per loop, its timesteps set by the family for the whole latent."""
        pipe = self.stand_in_pipe(model)
        shape = self.family.latent_shape(pipe, cfg.size, cfg.size)

        def make() -> FlowMatchEulerDiscreteScheduler:
            scheduler = FlowMatchEulerDiscreteScheduler(**self.scheduler_config())
            self.family.set_timesteps(pipe, scheduler, cfg.steps, shape, "cpu")
            return scheduler

        return make


class FluxBench(ModelBench):
    name = "flux"
    title = "Flux-layout transformer (FluxTransformer2DModel)"
    family = FLUX
    defaults = {"layers": 2, "extra_layers": 4, "heads": 4, "head_dim": 128}
    guided = False
    true_cfg_scale = 4.0
    """The CFG rows' weight: FluxPipeline's ``true_cfg_scale`` (off by default; any value above 1 costs the same)."""

    def text_tokens(self) -> int:
        return int(_call_default(FluxPipeline, "max_sequence_length"))

    def build(self, cfg: BenchConfig) -> nn.Module:
        from diffusers import FluxTransformer2DModel

        torch.manual_seed(0)
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # FLUX.1's 16 latent channels, packed 2x2
            num_layers=cfg.layers,
            num_single_layers=cfg.extra_layers,
            attention_head_dim=cfg.head_dim,
            num_attention_heads=cfg.heads,
            joint_attention_dim=4096,  # T5-XXL's width
            pooled_projection_dim=768,  # CLIP-L's
            guidance_embeds=True,
            # FLUX.1's rotary split of the head, (16, 56, 56) of 128, at any head width
            axes_dims_rope=(cfg.head_dim // 8, 7 * cfg.head_dim // 16, 7 * cfg.head_dim // 16),
        )
        return model.eval()

    def check(self, cfg: BenchConfig) -> None:
        super().check(cfg)
        if cfg.head_dim % 32:
            raise SystemExit(
                f"--head-dim: Flux's rotary axes split it 1:7:7 in even parts: a multiple of 32, got {cfg.head_dim}"
            )
        if cfg.heads % WORKERS:
            raise SystemExit(
                f"--heads: Ulysses gives each of the {WORKERS} workers a share: divisible by it, got {cfg.heads}"
            )
        if cfg.text_tokens % WORKERS:
            raise SystemExit(
                f"--text-tokens: Flux's context-parallel plan splits them between the {WORKERS} workers: "
                f"divisible by it, got {cfg.text_tokens}"
            )

    def describe(self, cfg: BenchConfig) -> str:
        return (
            f"FluxTransformer2DModel, {cfg.layers} double-stream + {cfg.extra_layers} single-stream blocks, "
            f"{cfg.heads} heads x {cfg.head_dim}, guidance embedding (FLUX.1-dev's layout)"
        )

    def scheduler_config(self) -> dict:
        """FLUX.1-dev's scheduler: the shift grows with the image's token count."""
        return dict(
            shift=3.0,
            use_dynamic_shifting=True,
            base_shift=0.5,
            max_shift=1.15,
            base_image_seq_len=256,
            max_image_seq_len=4096,
        )

    def conditioning(self, model: nn.Module, cfg: BenchConfig, guided: bool) -> Conditioning:
        """Random prompt embeddings of the config's widths, with the ids and distilled guidance Flux's ``encode``
        hands its ``denoise``; ``guided``: a negative branch too, weighted by ``true_cfg_scale``."""
        config = model.config
        g = torch.Generator().manual_seed(TEXT_SEED)

        def branch() -> dict[str, torch.Tensor]:
            return {
                "encoder_hidden_states": torch.randn(
                    1, cfg.text_tokens, config.joint_attention_dim, generator=g
                ),
                "pooled_projections": torch.randn(1, config.pooled_projection_dim, generator=g),
            }

        positive, negative = branch(), branch()
        rows = cfg.size // VAE_FACTOR
        extra = {
            "txt_ids": torch.zeros(cfg.text_tokens, 3),
            "img_ids": FluxPipeline._prepare_latent_image_ids(1, rows // 2, rows // 2, "cpu", torch.float32),
            "guidance": float(_call_default(FluxPipeline, "guidance_scale")),
        }
        weight = self.true_cfg_scale if guided else 1.0
        return Conditioning(FLUX, positive, negative if guided else None, weight, (cfg.size, cfg.size), extra)


class SD3Bench(ModelBench):
    name = "sd3"
    title = "SD3.5-layout transformer (SD3Transformer2DModel)"
    family = SD3
    defaults = {"layers": 2, "extra_layers": 1, "heads": 8, "head_dim": 64}
    guided = True
    clip_tokens = 77
    """CLIP's context length (SD3's ``tokenizer_max_length``): the prompt is CLIP's tokens, then T5's."""

    def text_tokens(self) -> int:
        return self.clip_tokens + int(_call_default(StableDiffusion3Pipeline, "max_sequence_length"))

    def build(self, cfg: BenchConfig) -> nn.Module:
        from diffusers import SD3Transformer2DModel

        torch.manual_seed(0)
        patches = cfg.size // VAE_FACTOR // 2
        model = SD3Transformer2DModel(
            sample_size=cfg.size // VAE_FACTOR,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=cfg.layers,
            attention_head_dim=cfg.head_dim,
            num_attention_heads=cfg.heads,
            joint_attention_dim=4096,  # T5-XXL's width
            caption_projection_dim=cfg.heads * cfg.head_dim,
            pooled_projection_dim=2048,  # the two CLIPs' pooled widths
            # SD3.5's table is 384 patches a side, cropped to the image; the image's own size crops nothing and
            # keeps every worker's copies small
            pos_embed_max_size=patches,
            dual_attention_layers=tuple(range(cfg.extra_layers)),
            qk_norm="rms_norm",
        )
        return model.eval()

    def check(self, cfg: BenchConfig) -> None:
        super().check(cfg)
        if not 0 <= cfg.extra_layers <= cfg.layers:
            raise SystemExit(
                f"--extra-layers: SD3's dual-attention blocks are some of its --layers {cfg.layers}, got {cfg.extra_layers}"
            )

    def describe(self, cfg: BenchConfig) -> str:
        return (
            f"SD3Transformer2DModel, {cfg.layers} joint blocks (the first {cfg.extra_layers} dual-attention), "
            f"{cfg.heads} heads x {cfg.head_dim}, RMS qk-norm, patch 2 (SD3.5-medium's layout)"
        )

    def scheduler_config(self) -> dict:
        """SD3.5's scheduler: a fixed shift of 3."""
        return dict(shift=3.0)

    def conditioning(self, model: nn.Module, cfg: BenchConfig, guided: bool) -> Conditioning:
        """Random prompt embeddings of the config's widths for both branches, at the pipeline's guidance scale."""
        config = model.config
        g = torch.Generator().manual_seed(TEXT_SEED)

        def branch() -> dict[str, torch.Tensor]:
            return {
                "encoder_hidden_states": torch.randn(
                    1, cfg.text_tokens, config.joint_attention_dim, generator=g
                ),
                "pooled_projections": torch.randn(1, config.pooled_projection_dim, generator=g),
            }

        positive, negative = branch(), branch()
        weight = float(_call_default(StableDiffusion3Pipeline, "guidance_scale")) if guided else 1.0
        return Conditioning(SD3, positive, negative if guided else None, weight, (cfg.size, cfg.size))


MODELS: dict[str, ModelBench] = {bench.name: bench for bench in (FluxBench(), SD3Bench())}


def has_sequence_plan(model: nn.Module) -> bool:
    """Whether diffusers ships a context-parallel plan for the model's class."""
    return getattr(model, "_cp_plan", None) is not None


def no_sequence_plan_note() -> str:
    return f"not available (no context-parallel plan in diffusers {diffusers.__version__})"


# ---- the timed loops ------------------------------------------------------------------------------------
def loop_figures(times: LoopTimes, first: int, end_seconds: float = 0.0) -> dict[str, float]:
    """Seconds per step from step ``first`` on and over the whole loop (``end_seconds``, the final gather,
    charged to the steps each counts), and bytes per step from step ``first`` on."""
    timed = len(times.seconds) - first
    return {
        "step_s": times.mean_seconds(first) + end_seconds / timed,
        "loop_s": times.mean_seconds() + end_seconds / len(times.seconds),
        "sent": times.mean_sent(first),
    }


def whole_latent_run(
    predict: NoisePredictor,
    noise: torch.Tensor,
    scheduler: Callable[[], object],
    first: int,
    counters: list[Callable[[], BytesSent]],
) -> Run:
    """A loop on the whole latent (one worker, sequence parallel, a CFG branch)."""

    def run() -> Timed:
        out, times = timed_loop(predict, noise, scheduler(), counters)
        return Timed(loop_figures(times, first), out)

    return run


# ---- worker set-up (bench.strategy_workers runs it in each worker process) ---------------------------------
def setup_worker(rank: int, world: int, cfg: BenchConfig) -> tuple[dict[str, Run], str]:
    """This worker's models, one per configuration, and their runs: ``bands sync``, ``bands displaced``,
    ``ulysses`` and ``ring`` (when the model class has a context-parallel plan), ``cfg``."""
    bench = MODELS[cfg.model]
    group = dist.group.WORLD
    runs: dict[str, Run] = {}
    notes: list[str] = []

    for mode in ("sync", "displaced"):
        model = bench.build(cfg)
        config = cfg.patch(mode)
        plan = bench.family.patch_plan(model, config)
        handle = parallelize_patch(model, group, plan, config)
        noise = bench.latent(model, cfg)
        bounds = band_bounds(noise.shape[-2], world, plan.align)
        predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, bench.guided))
        runs[f"bands {mode}"] = _band_run(
            predict, handle, noise, bounds, rank, bench.scheduler_factory(model, cfg), cfg
        )

    for name, config in (("ulysses", SequenceConfig(ulysses=world)), ("ring", SequenceConfig(ring=world))):
        model = bench.build(cfg)
        if not has_sequence_plan(model):
            break
        handle = parallelize_sequence(model, group, config)
        notes += [note for note in handle.notes if note not in notes]
        predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, bench.guided))
        runs[name] = whole_latent_run(
            predict,
            bench.latent(model, cfg),
            bench.scheduler_factory(model, cfg),
            cfg.warmup_steps,
            [lambda handle=handle: handle.bytes_sent],
        )

    layout = make_cfg_groups(group)
    model = bench.build(cfg)
    predict = split_cfg_predictor(model, bench.conditioning(model, cfg, guided=True), layout)
    runs["cfg"] = whole_latent_run(
        predict,
        bench.latent(model, cfg),
        bench.scheduler_factory(model, cfg),
        cfg.warmup_steps,
        [layout.comm.bytes_sent],
    )
    return runs, "; ".join(notes)


def _band_run(
    predict: NoisePredictor,
    handle: PatchHandle,
    noise: torch.Tensor,
    bounds: Bounds,
    rank: int,
    scheduler: Callable[[], object],
    cfg: BenchConfig,
) -> Run:
    """This worker's band of the latent for the whole loop, gathered once at the end."""

    def run() -> Timed:
        handle.reset()  # every loop starts synchronous, its warm-up included
        band = slice_band(noise, bounds, rank).contiguous()
        out, times = timed_loop(predict, band, scheduler(), [lambda: handle.bytes_sent])
        started = time.perf_counter()
        whole = gather_bands(out, dist.group.WORLD, bounds)
        return Timed(loop_figures(times, cfg.warmup_steps, time.perf_counter() - started), whole)

    return run


# ---- one model's measurement ------------------------------------------------------------------------------
def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``20 log10(peak / RMSE)`` over the whole latent, the peak being the reference's value range."""
    mse = (out.double() - ref.double()).pow(2).mean().item()
    peak = (ref.max() - ref.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)


@dataclass
class Row:
    """One configuration's results."""

    name: str
    reference: str
    """The one-worker row its speed and its error are measured against."""
    step_s: list[float]
    """Seconds per timed step, per measured round."""
    loop_s: list[float]
    """Seconds per step over the whole loop, per measured round."""
    sent: float
    """Bytes one worker (the busier) sends per timed step."""
    output: torch.Tensor | None


def measure(
    bench: ModelBench, cfg: BenchConfig, repeats: int, warmup: int, timeout: float
) -> tuple[list[Row], str]:
    """Every configuration of one model in alternating rounds; the rows and the workers' set-up note."""
    torch.set_num_threads(1)
    model = bench.build(cfg)
    noise = bench.latent(model, cfg)
    scheduler = bench.scheduler_factory(model, cfg)
    predict = batched_cfg_predictor(model, bench.conditioning(model, cfg, bench.guided))
    results: dict[str, list[Timed]] = {}

    def record(name: str, timed: Timed) -> float:
        results.setdefault(name, []).append(timed)
        return timed.figures["step_s"]

    def single(name: str, threads: int, guided_predict: NoisePredictor) -> Callable[[], float]:
        def run() -> float:
            torch.set_num_threads(threads)
            try:
                out, times = timed_loop(guided_predict, noise, scheduler())
            finally:
                torch.set_num_threads(1)
            return record(name, Timed(loop_figures(times, cfg.warmup_steps), out))

        return run

    w = WORKERS
    true_cfg = not bench.guided
    base = "1 worker"
    cfg_base = "1 worker (true CFG)" if true_cfg else base
    with WorkerPool(w, setup_worker, (cfg,), timeout) as pool:

        def parallel(name: str, command: str) -> Callable[[], float]:
            return lambda: record(name, pool.run(command))

        runs = {
            base: single(base, 1, predict),
            f"bands sync {w}": parallel(f"bands sync {w}", "bands sync"),
            f"bands displaced {w}": parallel(f"bands displaced {w}", "bands displaced"),
        }
        if has_sequence_plan(model):
            runs[f"ulysses {w}"] = parallel(f"ulysses {w}", "ulysses")
            runs[f"ring {w}"] = parallel(f"ring {w}", "ring")
        if true_cfg:
            runs[cfg_base] = single(
                cfg_base, 1, batched_cfg_predictor(model, bench.conditioning(model, cfg, True))
            )
        cfg_row = f"cfg {w}" + (" (true CFG)" if true_cfg else "")
        runs[cfg_row] = parallel(cfg_row, "cfg")
        runs["1 process x 2 threads"] = single("1 process x 2 threads", 2, predict)
        alternate(runs, repeats, warmup)
        note = pool.note

    rows = []
    for name, timed in results.items():
        measured = timed[warmup:]
        rows.append(
            Row(
                name,
                cfg_base if name in (cfg_base, cfg_row) else base,
                [t.figures["step_s"] for t in measured],
                [t.figures["loop_s"] for t in measured],
                measured[-1].figures["sent"],
                measured[-1].output,
            )
        )
    return rows, note


# ---- the report --------------------------------------------------------------------------------------------
EXACT_TOLERANCE = 1e-4
"""What an exact row may differ from one worker by (float32; the parity tests' tolerance): a row beyond it is
marked in the table."""


def timed_steps(cfg: BenchConfig) -> str:
    first = cfg.warmup_steps + 1
    return f"step {first}" if first == cfg.steps else f"steps {first}-{cfg.steps}"


def table(rows: list[Row], sequence_note: str | None) -> str:
    """The markdown table; ``sequence_note``: what the Ulysses and Ring rows say when they could not run."""
    by_name = {row.name: row for row in rows}
    lines = [
        "| configuration | s/step (median, timed steps) | s/step (median, whole loop) | speed-up vs 1 worker | "
        "max abs err vs 1 worker | PSNR vs 1 worker (dB) | MiB sent per step per worker |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ref = by_name[row.reference]
        err = (row.output - ref.output).abs().max().item()
        quality = psnr(row.output, ref.output)
        speed = median(ref.step_s) / median(row.step_s)
        exact = not row.name.startswith("bands displaced")
        flag = f" (> {EXACT_TOLERANCE:g}: not exact)" if exact and err > EXACT_TOLERANCE else ""
        lines.append(
            f"| {row.name} | {median(row.step_s):.3f} | {median(row.loop_s):.3f} | {speed:.2f}x | {err:.2e}{flag} | "
            f"{'exact' if math.isinf(quality) else f'{quality:.1f}'} | {row.sent / 2**20:.2f} |"
        )
        if row.name.startswith("bands displaced") and sequence_note is not None:
            for kind in ("ulysses", "ring"):
                lines.append(f"| {kind} {WORKERS} | {sequence_note} | | | | | |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> str:
    """The issue's two targets on the Flux layout at 2 workers, with the measured figures."""
    by_name = {row.name: row for row in rows}
    w = WORKERS
    displaced, sync, ulysses = (
        by_name[f"bands displaced {w}"],
        by_name[f"bands sync {w}"],
        by_name[f"ulysses {w}"],
    )
    base = by_name["1 worker"]
    quality = psnr(displaced.output, base.output)
    beat = median(ulysses.step_s) / median(displaced.step_s)
    within = median(sync.step_s) / median(ulysses.step_s)
    per_round = ", ".join(f"{u / d:.3f}" for u, d in zip(ulysses.step_s, displaced.step_s))
    per_round_sync = ", ".join(f"{s / u:.3f}" for s, u in zip(sync.step_s, ulysses.step_s))
    first = "met" if beat >= 1.05 and quality >= 30 else "NOT met"
    second = "met" if within <= 1.05 else "NOT met"
    return (
        f"Targets (Flux layout, {w} workers, medians of the timed steps over alternating rounds):\n\n"
        f"- displaced bands beat diffusers' Ulysses by at least 5% at >= 30 dB PSNR against one worker: "
        f"Ulysses / displaced = {beat:.3f} (per round: {per_round}), PSNR {quality:.1f} dB: **{first}**\n"
        f"- sync bands within 5% of Ulysses (sync / Ulysses <= 1.05): {within:.3f} "
        f"(per round: {per_round_sync}): **{second}**\n"
    )


def section(
    bench: ModelBench, cfg: BenchConfig, rows: list[Row], note: str, command: str, args: argparse.Namespace
) -> str:
    image_tokens = (cfg.size // VAE_FACTOR // 2) ** 2
    guidance = (
        f"classifier-free guidance on every row (guidance_scale {float(_call_default(StableDiffusion3Pipeline, 'guidance_scale'))}, "
        "both branches batched on one worker and on the bands)"
        if bench.guided
        else f"distilled guidance only (no CFG) except the true-CFG rows (true_cfg_scale {FluxBench.true_cfg_scale}, "
        "both branches batched on one worker), which are measured against each other"
    )
    sequence = (
        f"Ulysses: ContextParallelConfig(ulysses_degree={WORKERS}), Ring: ring_degree={WORKERS}; {note or 'enabled as is'}"
        if any(row.name.startswith("ulysses") for row in rows)
        else f"Ulysses and Ring: {no_sequence_plan_note()} for {bench.describe(cfg).split(',')[0]}"
    )
    body = (
        f"## Image DiT strategies: {bench.title}, {WORKERS} CPU workers\n\n"
        + provenance(command)
        + f"- model: {bench.describe(cfg)}, float32, random weights (seed 0), eval\n"
        f"- image {cfg.size}x{cfg.size}: latent {cfg.size // VAE_FACTOR}x{cfg.size // VAE_FACTOR} -> {image_tokens} "
        f"image tokens, plus {cfg.text_tokens} text tokens; {guidance}\n"
        f"- {cfg.steps} flow-matching Euler steps per loop (the family's timesteps); seconds per step timed over "
        f"{timed_steps(cfg)} (after the displaced warm-up) and over the whole loop; the "
        f"slowest worker's; median of {args.repeats} alternating rounds after {args.warmup} warm-up\n"
        f"- bands: the CLI's patch default ({PATCH_DEFAULTS.relative_to(PATCH_DEFAULTS.parents[2])}): "
        f"warmup_steps={cfg.warmup_steps}, stale_dtype={cfg.stale_dtype}, kv_source={cfg.kv_source}; the sync row "
        "with mode=sync, the displaced row with mode=displaced\n"
        f"- {sequence}\n"
        "- max abs err and PSNR: the final latent against the one-worker loop (the true-CFG rows against "
        "`1 worker (true CFG)`); PSNR = 20 log10(peak / RMSE) over the whole latent, peak = the reference's "
        "max - min ('exact': equal)\n"
        "- MiB sent per step per worker: the busier worker, averaged over the timed steps (bands: their exchanges, "
        "parallel.comm; Ulysses/Ring: diffusers' collectives, output gather included, parallel.sequence.traffic; "
        "CFG: the noise swap); the bands' one gather after the loop is timed but not counted\n\n"
        + table(
            rows, None if any(row.name.startswith("ulysses") for row in rows) else no_sequence_plan_note()
        )
        + "\n"
    )
    if bench.name == "flux":
        body += "\n" + targets(rows)
    return body


# ---- command line ------------------------------------------------------------------------------------------
def patch_defaults() -> dict:
    """The CLI's patch-parallel defaults the band rows run."""
    config = yaml.safe_load(PATCH_DEFAULTS.read_text())
    return {k: config[k] for k in ("warmup_steps", "stale_dtype", "kv_source")}


def configs(args: argparse.Namespace) -> list[BenchConfig]:
    """One ``BenchConfig`` per model asked for: the layout's defaults, the command line's overrides."""
    names = list(MODELS) if args.model == "all" else [args.model]
    out = []
    for name in names:
        bench = MODELS[name]
        cfg = BenchConfig(model=name, text_tokens=bench.text_tokens(), **bench.defaults, **patch_defaults())
        overrides = {
            f.name: getattr(args, f.name)
            for f in fields(BenchConfig)
            if getattr(args, f.name, None) is not None
        }
        overrides.pop("model", None)
        cfg = replace(cfg, **overrides)
        try:
            cfg.patch("displaced")
        except ValueError as err:
            raise SystemExit(f"--kv-source: {err}") from None
        bench.check(cfg)
        out.append(cfg)
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=[*MODELS, "all"], default="all")
    ap.add_argument("--size", type=int, help="image pixels a side (default 1024)")
    ap.add_argument(
        "--layers", type=int, help="Flux: double-stream blocks (default 2); SD3: joint blocks (default 2)"
    )
    ap.add_argument(
        "--extra-layers",
        type=int,
        help="Flux: single-stream blocks (default 4); SD3: dual-attention blocks (default 1)",
    )
    ap.add_argument("--heads", type=int, help="attention heads (default Flux 4, SD3 8)")
    ap.add_argument("--head-dim", type=int, help="channels per head (default Flux 128, SD3 64)")
    ap.add_argument(
        "--text-tokens", type=int, help="prompt tokens (default: the pipeline's, Flux 512, SD3 333)"
    )
    ap.add_argument("--steps", type=int, help="denoising steps per loop (default 5)")
    ap.add_argument(
        "--kv-source", help="what the bands exchange for attention (default: configs/parallel/patch.yaml's)"
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one worker answer")
    ap.add_argument("--no-write", action="store_true", help="print the sections instead of writing them")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    command = "python -m bench.image_dit_strategies " + " ".join(argv if argv is not None else sys.argv[1:])
    bodies = []
    for cfg in configs(args):
        bench = MODELS[cfg.model]
        print(f"{bench.title}: {bench.describe(cfg)}", file=sys.stderr, flush=True)
        rows, note = measure(bench, cfg, args.repeats, args.warmup, args.timeout)
        body = section(bench, cfg, rows, note, command, args)
        if not args.no_write:
            write_section(f"image-dit-strategies-{bench.name}", body)
        print(body, flush=True)
        bodies.append(body)
    return "\n".join(bodies)


if __name__ == "__main__":
    main()
