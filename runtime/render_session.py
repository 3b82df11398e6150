"""A worker's part of one render: its pipeline, its denoising loop, its timings. Plain torch, no Ray."""

from __future__ import annotations

import time

import numpy as np
import torch

from pipelines.sampling import DenoiseLoop, batched_cfg_predictor, decode_latents, encode_conditioning
from runtime.render_task import RenderTask


class RenderSession:
    def __init__(self, pipe, task: RenderTask, rank: int = 0, world: int = 1) -> None:
        if world != 1:
            raise NotImplementedError("multi-worker renders need a parallel strategy (patch parallelism)")
        self.pipe = pipe
        self.task = task
        started = time.perf_counter()
        cond = encode_conditioning(pipe, task.prompt, task.negative_prompt, task.guidance_scale, pipe.device)
        self.encode_s = time.perf_counter() - started
        self.loop = DenoiseLoop(
            pipe,
            task.sampler,
            task.steps,
            task.seed,
            task.height,
            task.width,
            batched_cfg_predictor(pipe.unet, cond),
        )
        self.step_seconds: list[float] = []

    def step(self) -> int:
        started = time.perf_counter()
        done = self.loop.step()
        self.step_seconds.append(time.perf_counter() - started)
        return done

    def latents(self) -> torch.Tensor:
        return self.loop.latents.detach().cpu()

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        return decode_latents(self.pipe, latents)
