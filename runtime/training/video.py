"""The video model's training phase: the Wan-layout DiT and its text encoder as a DeepSpeed pipeline (1F1B).

Run by runtime/training/worker.py's `train_worker` when the model is a video pipeline (model=builtin-video).
The per-frame VAE is the image model's, frozen; the layer list is pipelines/families/wan/training.py's, cut
into `stages` stages by measured forward + backward time; batches are flow-matching micro-batches of
procedural moving-shape clips (runtime/training/video_data.py). Checkpoints, resume and restarts work as
for the UNet phase, under the phase name "dit".
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist

from pipelines.video_dataset import VideoShapesConfig, VideoShapesDataset
from runtime.training.checkpoint import (
    CheckpointState,
    gather_full_state,
    load_full_state,
    write_checkpoint,
)
from runtime.training.config import TrainConfig
from runtime.training.engine import pipeline_engine
from runtime.training.log import StepLog
from runtime.training.video_data import FlowMatchStream, encode_clip_cache, training_shift


def initial_video_pipeline(cfg: TrainConfig, resume_from: Path | None):
    """The checkpoint's pipeline, the model's own weights (init=model), or a seeded random transformer."""
    from pipelines.builtin import resolve_model
    from pipelines.builtin.video import build_video_pipeline
    from pipelines.families.wan.loading import load_video_pipeline

    if resume_from is not None:
        return load_video_pipeline(resume_from / "pipeline")
    if cfg.init == "model":
        return load_video_pipeline(resolve_model(cfg.model))
    if cfg.model != "builtin-video":
        raise ValueError(
            f"init=random builds the built-in architecture only; model={cfg.model!r} needs init=model"
        )
    return build_video_pipeline(cfg.seed)


def video_saver(pipe):
    from pipelines.builtin.video import save_video_pipeline

    def save(path: Path) -> None:
        save_video_pipeline(pipe, path)

    return save


def _profile_inputs(cfg: TrainConfig, pipe, device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(cfg.seed)
    stage, side = cfg.dit, cfg.dit.resolution // pipe.vae_scale_factor
    n, channels = stage.micro_batch, pipe.transformer.config.in_channels
    latent = torch.randn((n, channels, stage.frames, side, side), generator=gen)
    timesteps = torch.rand(n, generator=gen) * 1000
    ids = torch.randint(
        pipe.text_encoder.config.vocab_size, (n, pipe.tokenizer.model_max_length), generator=gen
    )
    return latent.to(device), timesteps.to(device), ids.to(device)


def train_dit(
    cfg: TrainConfig,
    pipe,
    start: int,
    resume_from: Path | None,
    rank: int,
    device,
    resume_boundaries: tuple[int, ...] | None = None,
) -> None:
    from parallel.training.layers import noise_mse
    from pipelines.families import family_of

    stage = cfg.dit
    vae = pipe.vae.to(device).eval().requires_grad_(False)
    transformer, text_encoder = pipe.transformer.to(device).train(), pipe.text_encoder.to(device).train()
    layers = family_of(pipe).training_layers(transformer, text_encoder)  # the family's training plan
    module, engine, optimizer, boundaries = pipeline_engine(
        cfg,
        stage,
        layers,
        noise_mse,
        lambda: _profile_inputs(cfg, pipe, device),
        rank,
        resume_from,
        resume_boundaries,
    )
    cache = None
    if engine.is_first_stage() or engine.is_last_stage():  # inputs on the first, velocity targets on the last
        data = VideoShapesDataset(
            VideoShapesConfig(size=stage.resolution, frames=stage.frames, seed=cfg.dataset_seed)
        )
        began = time.perf_counter()
        # The cache stays on the CPU, where the stream draws with CPU generators (the same micro-batches on any
        # device); DeepSpeed's pipeline engine moves each micro-batch to the stage's device.
        cache = encode_clip_cache(vae, pipe.tokenizer, data, stage.cache_size, vae.config.scaling_factor)
        if rank == 0:
            print(f"encoded {stage.cache_size} clips in {time.perf_counter() - began:.1f} s", flush=True)
    stream = FlowMatchStream(
        cache,
        stage.cache_size,
        stage.micro_batch,
        cfg.seed,
        engine.grid.get_data_parallel_rank(),
        start * stage.micro_batches,
        stage.caption_dropout,
        training_shift(stage.sigma_shift, pipe.scheduler_config),
        int(pipe.scheduler_config.get("num_train_timesteps", 1000)),
        stage.context_offset,
        stage.context_clean,
        stage.context_frames,
    )
    modules = {"transformer": transformer, "text_encoder": text_encoder}

    def save_after_gather() -> None:
        state = gather_full_state(modules, module)
        if state is not None:
            load_full_state(modules, state)

    samples = stage.micro_batch * stage.micro_batches * cfg.data_parallel
    log = StepLog(cfg, "dit", stage.steps, start, rank)
    for step in range(start, stage.steps):
        for group in optimizer.param_groups:
            group["lr"] = stage.lr * min(1.0, (step + 1) / max(1, stage.warmup_steps))
        began = time.perf_counter()
        loss = float(engine.train_batch(data_iter=stream))
        done = step + 1
        log(done, loss, samples, time.perf_counter() - began)
        if done % cfg.checkpoint_every == 0 or done == stage.steps:
            save_after_gather()
            state = CheckpointState("dit", done, cfg.workers, cfg.stages, tuple(boundaries), cfg.run_id)
            write_checkpoint(Path(cfg.run_dir), state, video_saver(pipe), optimizer)
    log.close()
    save_after_gather()


def train_video(cfg: TrainConfig, checkpoint: Path | None, state: CheckpointState | None, rank: int, device):
    """A video model trains one phase: the DiT and text encoder (its VAE is the image model's, frozen)."""
    if state is not None and state.phase != "dit":
        raise ValueError(f"resume: {checkpoint} is a {state.phase} checkpoint, not a video model's")
    pipe = initial_video_pipeline(cfg, checkpoint)
    start = state.step if state is not None else 0
    if cfg.dit.steps > 0:
        resumed = checkpoint if start else None
        train_dit(cfg, pipe, start, resumed, rank, device, state.boundaries if resumed is not None else None)
    if rank == 0:
        final = Path(cfg.run_dir) / "final"
        video_saver(pipe)(final)
        print(f"wrote {final}", flush=True)
        if cfg.export:
            from pipelines.builtin import resolve_model
            from pipelines.builtin.video import save_video_pipeline

            target = resolve_model(cfg.model)
            save_video_pipeline(pipe, target, weights_only=True)
            print(f"exported trained weights (transformer, text encoder) to {target}", flush=True)
    dist.barrier()
