"""A worker's part of one render: its pipeline, its denoising loop, its timings. Plain torch, no Ray."""

from __future__ import annotations

import time

import torch

from pipelines.sampling import (
    DenoiseLoop,
    batched_cfg_predictor,
    denoiser,
    encode_conditioning,
    latent_shape,
)
from runtime.render_task import RenderTask


class RenderSession:
    def __init__(self, pipe, task: RenderTask, world: int = 1, resume: dict | None = None) -> None:
        if task.strategy == "none" and world != 1:
            raise ValueError(f"strategy 'none' runs on one worker, but the job group has {world}")
        self.pipe = pipe
        self.task = task
        self.patch = None
        started = time.perf_counter()
        cond = encode_conditioning(
            pipe,
            task.prompt,
            task.negative_prompt,
            task.guidance_scale,
            pipe.device,
            (task.height, task.width),
        )
        self.encode_s = time.perf_counter() - started
        predictor, rows = batched_cfg_predictor(denoiser(pipe), cond), None
        if task.strategy == "patch":
            from runtime.patch_render import setup_patch

            self.patch = setup_patch(pipe, cond, task, latent_shape(pipe, task.height, task.width)[2])
            predictor, rows = self.patch.predictor, self.patch.rows
        self.loop = DenoiseLoop(
            pipe, task.sampler, task.steps, task.seed, task.height, task.width, predictor, rows=rows
        )
        if resume is not None:
            self.loop.load_state_dict(resume)
            if self.patch is not None:  # stale activations are a cache, not state: refill synchronously
                self.patch.handle.reset(self.loop.step_index)
        self.step_seconds: list[float] = []

    @property
    def band_index(self) -> int:
        return self.patch.band_index if self.patch else 0

    def step(self) -> int:
        started = time.perf_counter()
        done = self.loop.step()
        self.step_seconds.append(time.perf_counter() - started)
        return done

    def latents(self) -> torch.Tensor:
        return self.loop.latents.detach().cpu()

    def report(self) -> dict:
        report = {"step_seconds": self.step_seconds, "rows": list(self.loop.rows), "band": self.band_index}
        if self.patch is not None:
            report["bytes_sent"] = self.patch.bytes_sent()
            report["branch"] = self.patch.cfg.branch if self.patch.cfg else "both"
        return report

    def close(self) -> None:
        """Restore the cached UNet to its unpatched self."""
        if self.patch is not None:
            self.patch.handle.remove()
            self.patch = None
