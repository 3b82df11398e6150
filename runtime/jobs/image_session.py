"""A worker's part of one image render: its pipeline, its denoising loop, its timings. Plain torch, no Ray.

``spec`` is the placed image spec the worker received (``cluster.jobs.image.RenderSpec``: its model is a
directory and its degree concrete); only its fields are read here.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from pipelines.families import family_of
from pipelines.sampling import (
    DenoiseLoop,
    batched_cfg_predictor,
    denoiser,
    encode_conditioning,
    latent_shape,
)
from runtime.compiled_blocks import set_compiled
from runtime.jobs.cache import attach_step_cache
from runtime.jobs.strategies import IMAGE_STRATEGIES, strategy_setup


class RenderSession:
    def __init__(self, pipe, spec: Any, world: int = 1, resume: dict | None = None) -> None:
        par = spec.parallel
        if par.strategy == "none" and world != 1:
            raise ValueError(f"strategy 'none' runs on one worker, but the job group has {world}")
        self.pipe = pipe
        self.spec = spec
        self.strategy = None
        """The strategy's set-up on this worker (``runtime.jobs.strategies``): its predictor and rows, what to
        do on a resume, its report, its undo; None for one worker on the whole latent."""
        started = time.perf_counter()
        cond = encode_conditioning(
            pipe,
            spec.prompt,
            spec.negative_prompt,
            spec.guidance_scale,
            pipe.device,
            (spec.height, spec.width),
            true_cfg_scale=spec.true_cfg_scale,
        )
        self.encode_s = time.perf_counter() - started
        predictor, rows = batched_cfg_predictor(denoiser(pipe), cond), None
        setup = strategy_setup(IMAGE_STRATEGIES, par.strategy)
        if setup is not None:
            self.strategy = setup(pipe, cond, par, latent_shape(pipe, spec.height, spec.width)[2])
            predictor, rows = self.strategy.predictor, self.strategy.rows
        model = denoiser(pipe)
        blocks = family_of(pipe).repeated_blocks(type(model))
        self.compiled = set_compiled(model, getattr(spec, "compile", False), blocks)
        """Whether the denoiser's repeated blocks run compiled in this job (``compile=true``)."""
        self.cache = attach_step_cache(pipe, getattr(spec, "cache", None))
        """The step cache on the denoiser (``parallel.cache``), after the strategy's changes; None without."""
        self.resume_state: dict | None = None
        """With a step cache: the render state from just before its last full step, what a stop hands out."""
        self.loop = DenoiseLoop(
            pipe, spec.sampler, spec.steps, spec.seed, spec.height, spec.width, predictor, rows=rows
        )
        if resume is not None:
            self.loop.load_state_dict(resume)
            if self.strategy is not None:
                self.strategy.resume(self.loop.step_index)
        self.step_seconds: list[float] = []

    @property
    def band_index(self) -> int:
        return self.strategy.band_index if self.strategy else 0

    def step(self) -> int:
        started = time.perf_counter()
        if self.cache is None:
            done = self.loop.step()
        else:
            before = self.loop.state_dict()
            self.cache.begin_step(self.loop.step_index)
            done = self.loop.step()
            if self.cache.end_step():
                self.resume_state = before
        self.step_seconds.append(time.perf_counter() - started)
        return done

    def advance(self, units: int = 1) -> int:
        """Run ``units`` denoising steps; returns the steps done."""
        done = self.loop.step_index
        for _ in range(units):
            done = self.step()
        return done

    def snapshot(self, segment_end: bool = False) -> dict:
        """This worker's band of the render state, for a checkpoint. With a step cache, the state from just
        before its last full step (every worker of the job has the same one): resuming re-runs that step in
        full, which rebuilds the cache as the uninterrupted job had it (``parallel.cache.step_cache``).
        ``segment_end``: the state now (the next segment's model starts its own cache)."""
        if self.cache is not None and self.resume_state is not None and not segment_end:
            return self.resume_state
        return self.loop.state_dict()

    def latents(self) -> torch.Tensor:
        return self.loop.latents.detach().cpu()

    def result(self) -> torch.Tensor:
        """What the render produced on this worker: its band of the latent."""
        return self.latents()

    def finish(self) -> dict:
        """This worker's report (then the session is closed)."""
        report = {"step_seconds": self.step_seconds, "rows": list(self.loop.rows), "band": self.band_index}
        if self.strategy is not None:
            report.update(self.strategy.report())
        if self.cache is not None:
            report["cache"] = self.cache.report()
        report["compile"] = self.compiled
        return report

    def close(self) -> None:
        """Undo the step cache's and the strategy's changes to the cached denoiser."""
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self.strategy is not None:
            self.strategy.close()
            self.strategy = None


def open_render_session(pipe, spec: Any, resume: dict | None = None) -> RenderSession:
    """The worker's session of a render (``Worker.begin``'s opener for image jobs)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return RenderSession(pipe, spec, world=world, resume=resume)
