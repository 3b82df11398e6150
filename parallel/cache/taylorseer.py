"""TaylorSeer on the denoiser's output: between full steps the prediction is extrapolated, not computed.

TaylorSeer (Liu et al., 2025) keeps the finite differences of a feature over the last full steps and predicts
it at a later step with a Taylor series. diffusers ships the arithmetic (``diffusers.hooks.taylorseer_cache``,
``TaylorSeerState``) and hooks it onto attention modules or, in its "lite" mode, onto ``proj_out`` while the
blocks return zeros. What it lacks for a job spread over workers and stopped between steps:

- its hooks count their own calls to decide, so a resumed or moved job (whose hooks start counting anew) would
  decide differently from the uninterrupted one; here the decision is a pure function of the job's step
  (``step_cache.full_by_schedule``), the same on every worker;
- its factors live in the hooks: here they are the checkpoint's, in the latent's layout (one tensor per order,
  shaped like this worker's band of the latent), so ``pipelines.render_state`` stitches them across bands and a
  job moved to another degree continues with exactly the factors the uninterrupted job had;
- lite mode still runs the embedders and the output norm on zeros; here a predicted step runs nothing.

The factors are taken of the guided prediction the sampler receives. That equals predicting ``proj_out``'s output
of each guidance branch (diffusers' lite mode): unpatchifying is a permutation, guidance and the Taylor series are
linear, so they commute, up to rounding. It works for UNets as well as transformers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.hooks.taylorseer_cache import TaylorSeerState

from parallel.cache.config import CacheConfig
from parallel.cache.step_cache import StepRecord, full_by_schedule

Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class TaylorSeerCache:
    """A ``StepCache`` that wraps the denoising loop's predictor (see ``apply_taylorseer``)."""

    checkpointed = True
    """Its state travels in the checkpoint (``state``/``load_state``): a stop hands out the state now, and a
    resumed job predicts as the uninterrupted one did."""

    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.record = StepRecord(config.mode)
        self.factors = TaylorSeerState(taylor_factors_dtype=torch.float32, max_order=config.order)
        self.step = 0
        self.full = True

    def full_at(self, step: int) -> bool:
        """Whether ``step`` (of the job) computes: the schedule's decision, or nothing to extrapolate from yet
        (a new segment's model starts without factors)."""
        return self.factors.last_update_step is None or full_by_schedule(self.config, step, first=0)

    def wrap(self, predictor: Predictor) -> Predictor:
        """The loop's predictor, computing on full steps and extrapolating on the others."""

        def predict(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self.factors.current_step = self.step
            if self.full:
                noise = predictor(latent, t)
                self.factors.update((noise,))
                return noise
            return self.factors.predict()[0]

        return predict

    def begin_step(self, step: int) -> None:
        self.step = step
        self.full = self.full_at(step)

    def end_step(self) -> bool:
        self.record.add(self.step, self.full)
        return self.full

    def state(self) -> dict:
        """The Taylor factors (each shaped like this worker's band of the latent) and the step they were taken at."""
        factors = self.factors.taylor_factors.get(0, {})
        return {
            "last_update_step": self.factors.last_update_step,
            "factors": [factors[order].detach().cpu().clone() for order in sorted(factors)],
            "dtype": str(self.factors.module_dtypes[0]).removeprefix("torch.") if self.factors.module_dtypes else None,
        }

    def load_state(self, state: dict | None, device: torch.device | str) -> None:
        """Continue with the factors of a checkpoint (already sliced to this worker's rows)."""
        if not state or state.get("last_update_step") is None:
            return
        factors = [factor.to(device) for factor in state["factors"]]
        self.factors.taylor_factors = {0: dict(enumerate(factors))}
        self.factors.last_update_step = state["last_update_step"]
        self.factors.module_dtypes = (getattr(torch, state["dtype"]),)
        self.factors.device = factors[0].device

    def report(self) -> dict:
        return {**self.record.report(), "interval": self.config.interval, "order": self.config.order}

    def close(self) -> None:
        self.factors.reset()


def apply_taylorseer(config: CacheConfig) -> TaylorSeerCache:
    """A TaylorSeer cache for one render; the session wraps its predictor with ``wrap``."""
    return TaylorSeerCache(config)
