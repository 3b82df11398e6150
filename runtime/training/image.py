"""The image model's training phases, run by runtime/training/worker.py's `train_worker`.

Phase 1 trains the VAE data-parallel on all workers; phase 2 trains the UNet and the text encoder as a
DeepSpeed pipeline (layer list from pipelines/families/sd/training.py), `stages` stages by
`workers / stages` replicas, on latents of the trained VAE. Both phases checkpoint every
`checkpoint_every` steps and resume from the last checkpoint, with `resume=true` or when Ray Train
restarts the workers after one died (runtime/training/recovery.py); rank 0 logs every step to
run_dir/metrics.jsonl (steps re-run after a restart appear again).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.distributed as dist

from parallel.training.bubble_fill import BubbleFiller
from runtime.training.checkpoint import (
    CheckpointState,
    gather_full_state,
    load_full_state,
    load_optimizer,
    write_checkpoint,
)
from runtime.training.config import TrainConfig
from runtime.training.data import (
    CachedLatents,
    NoisedLatentStream,
    OnlineLatents,
    encode_latent_cache,
    latent_scaling,
    shapes,
    vae_batch,
)
from runtime.training.engine import deepspeed_config, pipeline_engine
from runtime.training.log import StepLog


def _initial_pipeline(cfg: TrainConfig, resume_from: Path | None):
    from pipelines.builtin import resolve_model
    from pipelines.builtin.image import build_image_pipeline
    from pipelines.loading import load_pipeline

    if resume_from is not None:
        return load_pipeline(resume_from / "pipeline")
    if cfg.init == "model":
        return load_pipeline(resolve_model(cfg.model))
    if cfg.model != "builtin-image":
        raise ValueError(
            f"init=random builds the built-in architecture only; model={cfg.model!r} needs init=model"
        )
    return build_image_pipeline(cfg.seed)


def _mean_over_ranks(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / dist.get_world_size()


def train_vae(cfg: TrainConfig, pipe, start: int, resume_from: Path | None, rank: int, device) -> None:
    import deepspeed

    vae = pipe.vae.to(device).train()
    stage = cfg.vae
    engine, optimizer, _, _ = deepspeed.initialize(
        model=vae,
        model_parameters=list(vae.parameters()),
        config=deepspeed_config(stage.batch_size, 1, stage.lr),
    )
    if resume_from is not None:
        load_optimizer(resume_from, optimizer)
    data = shapes(stage.resolution, cfg.dataset_seed)
    log = StepLog(cfg, "vae", stage.steps, start, rank)
    for step in range(start, stage.steps):
        began = time.perf_counter()
        images = vae_batch(data, cfg.seed, step, rank, stage.batch_size).to(device)
        posterior = vae.encode(images).latent_dist
        z = posterior.mean
        if stage.sample_posterior:
            noise_gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 7919 + step * 101 + rank)
            z = z + posterior.std * torch.randn(z.shape, generator=noise_gen).to(device)
        recon = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(recon, images) + stage.kl_weight * posterior.kl().mean()
        engine.backward(loss)
        engine.step()
        done = step + 1
        log(
            done,
            _mean_over_ranks(loss.item()),
            stage.batch_size * dist.get_world_size(),
            time.perf_counter() - began,
        )
        if done % cfg.checkpoint_every == 0 or done == stage.steps:
            if done == stage.steps:
                scale = latent_scaling(vae.eval(), shapes(cfg.unet.resolution, cfg.dataset_seed))
                box = [scale]
                dist.broadcast_object_list(box, src=0)
                vae.register_to_config(scaling_factor=box[0])
                vae.train()
            state = CheckpointState("vae", done, cfg.workers, cfg.stages, run_id=cfg.run_id)
            write_checkpoint(Path(cfg.run_dir), state, _saver(pipe), optimizer)
    log.close()


def _saver(pipe):
    def save(path: Path) -> None:
        pipe.save_pretrained(path, safe_serialization=True)

    return save


def _profile_inputs(cfg: TrainConfig, pipe, device) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(cfg.seed)
    n, side = cfg.unet.micro_batch, cfg.unet.resolution // 8
    latent = torch.randn((n, pipe.unet.config.in_channels, side, side), generator=gen)
    timesteps = torch.randint(1000, (n,), generator=gen)
    ids = torch.randint(
        pipe.text_encoder.config.vocab_size, (n, pipe.tokenizer.model_max_length), generator=gen
    )
    return latent.to(device), timesteps.to(device), ids.to(device)


def _pool_size(cfg: TrainConfig) -> int:
    """How many items the first stage's latent source picks from (the last stage draws the same picks)."""
    if cfg.unet.latents == "cache":
        return cfg.unet.cache_size
    return len(shapes(cfg.unet.resolution, cfg.dataset_seed))


def _latent_source(cfg: TrainConfig, pipe, vae) -> CachedLatents | OnlineLatents:
    data = shapes(cfg.unet.resolution, cfg.dataset_seed)
    scaling = vae.config.scaling_factor
    if cfg.unet.latents == "online":
        return OnlineLatents(vae, pipe.tokenizer, data, scaling)
    cache = encode_latent_cache(vae, pipe.tokenizer, data, cfg.unet.cache_size, scaling)
    # On the CPU, like the noise it meets (CPU generators: the same draws on any device); DeepSpeed moves each
    # micro-batch to the stage's device.
    return CachedLatents(cache)


def train_unet(
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

    stage = cfg.unet
    vae = pipe.vae.to(device).eval().requires_grad_(False)
    unet, text_encoder = pipe.unet.to(device).train(), pipe.text_encoder.to(device).train()
    layers = family_of(pipe).training_layers(unet, text_encoder)  # the family's plan for pipeline training
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
    replica = engine.grid.get_data_parallel_rank()
    side = stage.resolution // 8
    source = _latent_source(cfg, pipe, vae) if engine.is_first_stage() else None
    stream = NoisedLatentStream(
        pipe.scheduler,
        (unet.config.in_channels, side, side),
        stage.micro_batch,
        cfg.seed,
        replica,
        start * stage.micro_batches,
        stage.caption_dropout,
        source,
        _pool_size(cfg),
    )
    data_iter = stream
    if stage.bubble_filling and engine.is_first_stage():
        data_iter = BubbleFiller(stream, depth=stage.micro_batches, nice=stage.bubble_filling_nice)
    modules = {"unet": unet, "text_encoder": text_encoder}

    def save_after_gather() -> None:
        state = gather_full_state(modules, module)
        if state is not None:
            load_full_state(modules, state)

    samples = stage.micro_batch * stage.micro_batches * cfg.data_parallel
    log = StepLog(cfg, "unet", stage.steps, start, rank)
    try:
        for step in range(start, stage.steps):
            for group in optimizer.param_groups:
                group["lr"] = stage.lr * min(1.0, (step + 1) / max(1, stage.warmup_steps))
            began, frozen_before = time.perf_counter(), stream.busy_s
            loss = float(engine.train_batch(data_iter=data_iter))
            done = step + 1
            # frozen_s: the first stage's seconds spent building micro-batches (in a thread when filling).
            log(done, loss, samples, time.perf_counter() - began, frozen_s=stream.busy_s - frozen_before)
            if done % cfg.checkpoint_every == 0 or done == stage.steps:
                save_after_gather()
                state = CheckpointState("unet", done, cfg.workers, cfg.stages, tuple(boundaries), cfg.run_id)
                write_checkpoint(Path(cfg.run_dir), state, _saver(pipe), optimizer)
    finally:
        if isinstance(data_iter, BubbleFiller):
            data_iter.close()
    log.close()
    save_after_gather()


def train_image(cfg: TrainConfig, checkpoint: Path | None, state: CheckpointState | None, rank: int, device):
    """An image model trains the VAE, then the UNet and text encoder, from `checkpoint` if resuming."""
    pipe = _initial_pipeline(cfg, checkpoint)

    vae_done = state is not None and (state.phase == "unet" or state.step >= cfg.vae.steps)
    if not vae_done and cfg.vae.steps > 0:
        start = state.step if state is not None else 0
        train_vae(cfg, pipe, start, checkpoint if start else None, rank, device)
    unet_start = state.step if state is not None and state.phase == "unet" else 0
    if cfg.unet.steps > 0:
        resumed = checkpoint if unet_start else None
        boundaries = state.boundaries if resumed is not None else None
        train_unet(cfg, pipe, unet_start, resumed, rank, device, boundaries)

    if rank == 0:
        final = Path(cfg.run_dir) / "final"
        pipe.save_pretrained(final, safe_serialization=True)
        print(f"wrote {final}", flush=True)
        if cfg.export:
            from pipelines.builtin import resolve_model, strip_machine_paths

            target = resolve_model(cfg.model)
            pipe.save_pretrained(target, safe_serialization=True)
            strip_machine_paths(target)  # the configs would name the checkpoint it was loaded from
            print(f"exported trained weights to {target}", flush=True)
    dist.barrier()
