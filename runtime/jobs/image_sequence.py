"""Glue between a render and sequence parallelism: diffusers' context parallelism on the denoiser.

Runs inside a worker whose default process group is the job's group. Every worker keeps the whole latent
and calls the denoiser on all of it; the model's context-parallel plan splits its tokens between the
workers of its replica (Ulysses x Ring) and gathers the output, so every worker steps the sampler on the
same noise. With CFG parallel the group's first half runs the conditional branch and the second half the
unconditional one, each half splitting its sequence, and partners swap their noise (parallel/patch/cfg.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from parallel.patch.cfg import CFGLayout, make_cfg_groups
from parallel.sequence import SequenceConfig, SequenceHandle, parallelize_sequence
from pipelines.families import Conditioning
from pipelines.sampling import NoisePredictor, batched_cfg_predictor
from runtime.jobs.image_patch import split_cfg_predictor, with_cfg_bytes


@dataclass
class SequenceSetup:
    handle: SequenceHandle
    """The denoiser under context parallelism: its traffic; ``remove()`` restores the cached model."""
    predictor: NoisePredictor
    """(whole latent, t) -> guided noise."""
    rows: tuple[int, int]
    """The whole latent's rows: every worker keeps all of it."""
    cfg: CFGLayout | None
    """The CFG layout, when the branches are split."""
    band_index: int = 0
    """One band, the whole latent (every worker holds the same copy)."""

    def bytes_sent(self) -> dict[str, dict[int, int]]:
        """Cumulative bytes by kind and peer (global rank): diffusers' collectives and the CFG exchange."""
        return with_cfg_bytes(self.handle.bytes_sent.total, self.cfg)

    # --- what a render session asks of its strategy (runtime.jobs.strategies) ----------------------------
    def resume(self, step: int) -> None:
        """Nothing is kept between steps: a resumed render runs as a fresh one."""

    def report(self) -> dict:
        config = self.handle.config
        return {
            "bytes_sent": self.bytes_sent(),
            "branch": self.cfg.branch if self.cfg else "both",
            "sequence": {"ulysses": config.ulysses, "ring": config.ring, "notes": list(self.handle.notes)},
        }

    def close(self) -> None:
        """Restore the cached denoiser: no context-parallel hooks, its own attention backend."""
        self.handle.remove()


def setup_sequence(pipe: Any, cond: Conditioning, par: Any, latent_rows: int) -> SequenceSetup:
    """``par``: the placed spec's parallel fields (strategy sequence; degree, ring, cfg)."""
    group = dist.group.WORLD
    layout = make_cfg_groups(group) if par.cfg else None
    replicas = 2 if layout is not None else 1
    per_replica = dist.get_world_size(group) // replicas
    model = cond.family.denoiser_of(pipe)
    # a text whose length only the encoded prompt tells (Qwen-Image) is made to split evenly here
    cond, no_ring = cond.family.sequence_conditioning(cond, per_replica, apart=layout is not None)
    config, note = _sequence_config(model, per_replica, par.ring, no_ring)
    handle = parallelize_sequence(model, group, config, replicas=replicas)
    handle.notes += [note] if note else []
    if layout is None:
        predictor = batched_cfg_predictor(model, cond)
    else:
        predictor = split_cfg_predictor(model, cond, layout)
    return SequenceSetup(handle, predictor, (0, latent_rows), layout)


def _sequence_config(
    model: Any, workers: int, ring: int, no_ring: str | None
) -> tuple[SequenceConfig, str | None]:
    """Ulysses x Ring over a replica's ``workers``; all Ulysses when the conditioning cannot run under Ring
    (``no_ring``, the family's reason): the same result, on other collectives. Every worker of the group decides
    alike (the same prompts, encoded alike). Raises ValueError when the heads do not split between them."""
    if ring == 1 or no_ring is None:
        return SequenceConfig(ulysses=workers // ring, ring=ring), None
    heads = model.config.num_attention_heads
    if heads % workers:
        raise ValueError(
            f"parallel.ring: this prompt cannot run under Ring attention exactly ({no_ring}), and its {heads} "
            f"attention heads do not split between {workers} Ulysses workers instead"
        )
    return SequenceConfig(ulysses=workers, ring=1), f"Ring {ring} ran as Ulysses {workers}: {no_ring}"
