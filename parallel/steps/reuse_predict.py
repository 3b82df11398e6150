"""ParaStep's reuse-then-predict over a process group: ``degree`` adjacent steps at once, one per worker.

Adjacent steps' noise predictions are close. At the start of a round (step ``s``), every worker holds the same
latent x_s and the last noise the job predicted. Worker k estimates x_{s+k} by stepping a copy of the sampler k
times with that last noise (reuse), predicts the noise of step s+k from the estimate (predict), and the workers
all-gather their k noises: the only traffic, one latent-sized tensor per worker per round. Every worker then
steps the real sampler through the round with the gathered noises, in order, so all keep the same latent. Worker
0's noise is exact; the others' are predicted from estimated latents, so the result is close to one worker's,
not equal. The first ``warmup_steps`` steps run as one worker would (each worker computes the same step), since
the trajectory changes fastest there and there is no previous noise to reuse yet.

A round's gathered noises and the last noise are the state between steps (``state_dict``): a job stopped in the
middle of a round resumes exactly. Plain torch: the loop it drives is duck-typed (``latents``, ``scheduler``,
``timesteps``, ``step_index``, ``step_kwargs``), as ``pipelines.sampling.DenoiseLoop`` has them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from parallel.comm import Comm

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class ReuseThenPredict:
    """A noise predictor for a denoising loop that runs its steps in rounds of the group's size."""

    def __init__(self, predict: NoisePredictor, group: dist.ProcessGroup | None = None, warmup_steps: int = 1):
        self.predict = predict
        self.comm = Comm(group)
        self.warmup_steps = warmup_steps
        self.loop: Any = None
        self.pending: dict[int, torch.Tensor] = {}
        """Step -> its noise, gathered in this round, for the steps still to take."""
        self.last_noise: torch.Tensor | None = None
        """The noise of the latest step taken: what the next round reuses."""
        self.rounds: list[int] = []
        """The step each round started at (for the report)."""

    def bind(self, loop: Any) -> None:
        """The loop whose steps this predictor serves (it reads its latent, sampler and step)."""
        self.loop = loop

    def __call__(self, model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step = self.loop.step_index
        if step in self.pending:
            noise = self.pending.pop(step)
        elif step < self.warmup_steps or self.last_noise is None:
            noise = self.predict(model_in, t)
        else:
            noise = self._round(step, model_in, t)
        self.last_noise = noise
        return noise

    def _round(self, step: int, model_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        size = min(self.comm.world, len(self.loop.timesteps) - step)
        offset = self.comm.rank
        if offset == 0:
            mine = self.predict(model_in, t)
        elif offset < size:
            mine = self._predict_ahead(step, offset)
        else:  # the job's last round is shorter than the group: this worker has no step in it
            mine = torch.zeros_like(model_in if self.last_noise is None else self.last_noise)
        parts = self.comm.all_gather_uneven(mine.contiguous(), [mine.shape[0]] * self.comm.world, 0, "noise").wait()
        for k in range(1, size):
            self.pending[step + k] = parts[k]
        self.rounds.append(step)
        return parts[0]

    def _predict_ahead(self, step: int, offset: int) -> torch.Tensor:
        """Noise of step ``step + offset`` from the latent the last noise, reused ``offset`` times, leads to."""
        loop = self.loop
        sampler = copy.deepcopy(loop.scheduler)
        kwargs = {k: v for k, v in loop.step_kwargs.items() if k != "generator"}  # the job's RNG stays untouched
        latent = loop.latents
        for k in range(offset):
            latent = sampler.step(self.last_noise, loop.timesteps[step + k], latent, **kwargs, return_dict=False)[0]
        t = loop.timesteps[step + offset]
        scale = getattr(sampler, "scale_model_input", None)
        return self.predict(scale(latent, t) if scale is not None else latent, t)

    # --- what a checkpoint keeps ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "pending": {step: noise.detach().cpu().clone() for step, noise in self.pending.items()},
            "last_noise": None if self.last_noise is None else self.last_noise.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict, device: torch.device | str) -> None:
        self.pending = {int(step): noise.to(device) for step, noise in state["pending"].items()}
        last = state["last_noise"]
        self.last_noise = None if last is None else last.to(device)
