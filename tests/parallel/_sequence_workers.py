"""Per-rank scenarios of sequence parallelism (spawned by ``_parallel_dist.run_ranks``) on the tiny Flux model.

One spawn per world size runs every scenario and returns a dict; the test files only compare.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import _sequence_models as S
import torch
import torch.distributed as dist

from cluster.jobs.image import ParallelSpec
from parallel.patch.cfg import combine_cfg, make_cfg_groups
from parallel.sequence import SequenceConfig, parallelize_sequence
from runtime.jobs.image_sequence import setup_sequence


def _backends(model: torch.nn.Module) -> list:
    return [m.processor._attention_backend for m in model.modules() if hasattr(m, "processor")]


def _forwards(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    texts = S.prompts(model)
    with torch.no_grad():
        return {b: S.flux_forward(model, S.initial_latent(), torch.tensor(700.0), texts[b]) for b in texts}


def one_replica(config: SequenceConfig) -> dict[str, Any]:
    """The whole world splits one model's sequence: forwards, the guided loop, traffic, undo."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    model = S.tiny_flux()
    backends = _backends(model)
    active = _AttentionBackendRegistry._active_backend  # the process's: processors left at None use it
    handle = parallelize_sequence(model, dist.group.WORLD, config)
    r: dict[str, Any] = _forwards(model)
    r["bytes_forward"] = dict(handle.bytes_sent.last_step)
    r["loop"] = S.denoise(model, S.guided_on_one_device(model))
    r["notes"] = list(handle.notes)
    try:
        parallelize_sequence(model, dist.group.WORLD, config)
    except ValueError as err:
        r["twice"] = str(err)
    handle.remove()
    sent = {kind: dict(peers) for kind, peers in handle.bytes_sent.total.items()}
    r["bytes_total"] = sent
    r["after_remove"] = _forwards(model)  # the whole sequence on this rank, no collective
    r["bytes_unchanged_after_remove"] = sent == handle.bytes_sent.total
    r["restored"] = model._parallel_config is None and _backends(model) == backends
    r["restored"] = r["restored"] and _AttentionBackendRegistry._active_backend == active
    return r


def two_branches(config: SequenceConfig) -> dict[str, Any]:
    """CFG parallel: each half of the world runs one branch, splitting its sequence; partners swap noise."""
    model = S.tiny_flux()
    layout = make_cfg_groups(dist.group.WORLD)
    handle = parallelize_sequence(model, dist.group.WORLD, config, replicas=2)
    text = S.prompts(model)[layout.branch]

    def guide(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return combine_cfg(S.flux_forward(model, latent, t, text), layout, S.GUIDANCE)

    r = {"branch": layout.branch, "replica": handle.replica, "partner": layout.partner, "loop": S.denoise(model, guide)}
    r["bytes"] = {kind: dict(peers) for kind, peers in handle.bytes_sent.total.items()}
    r["cfg_bytes"] = layout.comm.bytes_sent().total
    handle.remove()
    return r


def render_setup(world: int, ring: int, cfg: bool) -> dict[str, Any]:
    """The worker's set-up of a render (``runtime.jobs.image_sequence``): its predictor over the guided loop,
    its rows, its report, its undo."""
    model = S.tiny_flux()
    pipe = SimpleNamespace(transformer=model)
    par = ParallelSpec(strategy="sequence", degree=world, ring=ring, cfg=cfg)
    setup = setup_sequence(pipe, S.stand_in_conditioning(model), par, S.LATENT[2])
    r = {"rows": setup.rows, "band": setup.band_index, "loop": S.denoise(model, setup.predictor)}
    setup.resume(1)
    r["report"] = setup.report()
    setup.close()
    r["restored"] = model._parallel_config is None
    return r


def sequence_scenarios(rank: int, world: int) -> dict[str, Any]:
    if world == 2:
        return {
            "ulysses": one_replica(SequenceConfig(ulysses=2)),
            "ring": one_replica(SequenceConfig(ring=2)),
            "render": render_setup(world, ring=1, cfg=False),
        }
    return {
        "ulysses_x_ring": one_replica(SequenceConfig(ulysses=2, ring=2)),
        "ulysses_x_cfg": two_branches(SequenceConfig(ulysses=2)),
        "render_cfg": render_setup(world, ring=2, cfg=True),
    }
