"""A worker's part of one image render: its pipeline, its denoising loop, its timings. Plain torch, no Ray.

``spec`` is the placed image spec the worker received (``cluster.jobs.image.RenderSpec``: its model is a
directory and its degree concrete); only its fields are read here.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from parallel.cache.calibrate import Calibration, calibrate
from pipelines.families import family_of
from pipelines.render_state import slice_state
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
        spec.fill_guidance(family_of(pipe))  # a spec built in-process, not validated: the model's default weights
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
            options=spec.encode_options(),
        )
        self.encode_s = time.perf_counter() - started
        self.cache = None
        try:
            predictor, rows = batched_cfg_predictor(denoiser(pipe), cond), None
            setup = strategy_setup(IMAGE_STRATEGIES, par.strategy)
            if setup is not None:
                self.strategy = setup(pipe, cond, par, latent_shape(pipe, spec.height, spec.width)[2])
                predictor, rows = self.strategy.predictor, self.strategy.rows
            model = denoiser(pipe)
            blocks = family_of(pipe).repeated_blocks(type(model))
            self.compiled = set_compiled(model, getattr(spec, "compile", False), blocks)
            """Whether the denoiser's repeated blocks run compiled in this job (``compile=true``)."""
            def new_loop(cache=None) -> DenoiseLoop:
                """A loop from step 0; a cache that replaces predictions (TaylorSeer) wraps the predictor."""
                use = cache.wrap(predictor) if hasattr(cache, "wrap") else predictor
                loop = DenoiseLoop(pipe, spec.sampler, spec.steps, spec.seed, spec.height, spec.width, use, rows=rows)
                if hasattr(predictor, "bind"):  # a predictor that reads the loop (step parallelism)
                    predictor.bind(loop)
                return loop

            self.new_loop = new_loop
            self.calibration = job_calibration(spec, resume, self.render_whole)
            """A ``cache.min_psnr`` job's chosen setting (``parallel.cache.calibrate``): found here by rendering, kept
            in the service's store for later jobs, or carried by the checkpoint this session resumes; None without."""
            cache = getattr(spec, "cache", None)
            self.cache = attach_step_cache(pipe, self.calibration.applied(cache) if self.calibration else cache)
            """The step cache on the denoiser (``parallel.cache``), after the strategy's changes; None without."""
            self.resume_state: dict | None = None
            """With a step cache: the render state from just before its last full step, what a stop hands out."""
            self.loop = self.new_loop(self.cache)
            if resume is not None:
                self.loop.load_state_dict(resume)
                if getattr(self.cache, "checkpointed", False):  # its state is the checkpoint's, this worker's rows
                    self.cache.load_state(slice_state(resume, self.loop.rows).get("step_cache"), self.loop.device)
                if self.strategy is not None:
                    self.strategy.resume(self.loop.step_index)
                    if hasattr(self.strategy, "load_state"):  # what it keeps between steps (step parallelism)
                        self.strategy.load_state(resume, self.loop.device)
        except BaseException:
            # the pipeline is the worker's cached one: the next job must get it as loaded, not with this
            # job's bands, hooks or step cache left on it by a set-up that failed half-way
            self.close()
            raise
        self.step_seconds: list[float] = []

    def render_whole(self, config) -> tuple[torch.Tensor, dict]:
        """The whole job once, from step 0, with step cache ``config`` (calibration's renders): this worker's final
        latent and the cache's report."""
        if self.strategy is not None:
            self.strategy.resume(0)
        cache = attach_step_cache(self.pipe, config)
        loop = self.new_loop(cache)
        try:
            while not loop.done:
                if cache is not None:
                    cache.begin_step(loop.step_index)
                loop.step()
                if cache is not None:
                    cache.end_step()
            return loop.latents, cache.report() if cache is not None else {}
        finally:
            if cache is not None:
                cache.close()
            if self.strategy is not None:
                self.strategy.resume(0)

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
        state = self.loop.state_dict()
        if getattr(self.cache, "checkpointed", False):
            if not segment_end:  # the next segment's model starts its own cache
                state = {**state, "step_cache": self.cache.state()}
        elif self.cache is not None and self.resume_state is not None and not segment_end:
            state = self.resume_state
        if self.calibration is not None:
            state = {**state, "cache_calibration": self.calibration.as_dict()}
        if self.strategy is not None and hasattr(self.strategy, "state"):
            state = {**state, **self.strategy.state()}
        return state

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
        if self.cache is not None or self.calibration is not None:
            # no setting met a min_psnr budget: the job ran in full, and says so in the same keys as a cached one
            report["cache"] = self.cache.report() if self.cache is not None else {"mode": "none", "reused_steps": []}
            if self.calibration is not None:
                report["cache"]["calibration"] = self.calibration.as_dict()
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


def job_calibration(spec: Any, resume: dict | None, render) -> Calibration | None:
    """The setting a ``cache.min_psnr`` job runs with: carried by its checkpoint, kept by the service (the spec is
    ``calibrated``), or found now by rendering with ``render`` (every worker of the job takes part)."""
    cache = getattr(spec, "cache", None)
    if cache is None or cache.min_psnr is None or not (cache.enabled or cache.calibrated):
        return None
    if resume is not None and resume.get("cache_calibration") is not None:
        return Calibration(**resume["cache_calibration"])
    if cache.calibrated:
        knob = "threshold" if cache.mode in ("first-block", "teacache", "block-cache") else "interval"
        value = getattr(cache, knob) if cache.enabled else None
        return Calibration(cache.min_psnr, knob, value, None)
    return calibrate(render, cache, spec.steps, cache.min_psnr)


def open_render_session(pipe, spec: Any, resume: dict | None = None) -> RenderSession:
    """The worker's session of a render (``Worker.begin``'s opener for image jobs)."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    return RenderSession(pipe, spec, world=world, resume=resume)
