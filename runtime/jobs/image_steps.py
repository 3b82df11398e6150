"""Glue between a render and step parallelism (ParaStep, ``parallel.steps``): every worker keeps the whole latent
and runs the whole model; the workers take adjacent steps at once and exchange only their noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from parallel.steps import ReuseThenPredict
from pipelines.families import Conditioning
from pipelines.sampling import batched_cfg_predictor


@dataclass
class StepsSetup:
    predictor: ReuseThenPredict
    """(whole latent, t) -> guided noise, in rounds of the group's size; bound to the loop by the session."""
    rows: tuple[int, int]
    """The whole latent's rows: every worker keeps all of it."""
    band_index: int = 0

    def resume(self, step: int) -> None:
        """A resume restores the round in progress from the checkpoint (``load_state``), or none."""
        self.predictor.pending = {}
        self.predictor.last_noise = None

    def state(self) -> dict:
        return {"parastep": self.predictor.state_dict()}

    def load_state(self, state: dict, device) -> None:
        if "parastep" in state:
            self.predictor.load_state_dict(state["parastep"], device)

    def report(self) -> dict:
        sent = self.predictor.comm.bytes_sent().total
        return {"bytes_sent": sent, "branch": "both", "steps": {"rounds": list(self.predictor.rounds)}}

    def close(self) -> None:
        """Nothing on the model changed."""


def setup_steps(pipe: Any, cond: Conditioning, par: Any, latent_rows: int) -> StepsSetup:
    """``par``: the placed spec's parallel fields (strategy steps; degree, warmup_steps)."""
    model = cond.family.denoiser_of(pipe)
    predictor = ReuseThenPredict(batched_cfg_predictor(model, cond), dist.group.WORLD, par.warmup_steps)
    return StepsSetup(predictor, (0, latent_rows))
