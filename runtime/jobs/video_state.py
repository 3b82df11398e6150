"""The frame pipeline's state at a tick boundary, as plain data: what a video job's checkpoint holds.

At the boundary before tick T the state is: T itself; on stage 0 the latent and the sampler state
of every block still in the queue (blocks that enter at T or later start from the seed's noise
template, so they need nothing); on every stage the feature cache entries of its layers that the
queue still reads (the block just before the oldest queued one, and the queued ones). Finished
blocks are not state: they have left for the video writer. With a causal VAE (Wan's), the decoding
stage's block decoder (stage 0's, or the one stage the plan gave the whole-block decode) carries a cache
from block to block: it is state too (``export_decoder_state``), or the frames after a resume would
differ; the merged state holds it whichever stage exported it, and the stage that decodes after the
resume (maybe another) loads it. The state of all stages merged
(``merge_stage_states``) is independent of the stage count, because the cache is keyed by layer,
so a job paused on S stages resumes on any other S' (``load_stage_state`` keeps a stage's layers).

Functions over a ``FramePipeline`` (plain torch, no Ray) rather than methods on it, so that the
pipeline file stays one strategy; they read its fields, and stage 0 settles the outputs still on
their way back first. They live in runtime/ because the sampler state comes from pipelines/.
"""

from __future__ import annotations

from typing import Any

import torch

from parallel.frames.cache import EdgeKV
from parallel.frames.pipeline import FramePipeline
from parallel.frames.schedule import blocks_finished, queue_at
from pipelines.render_state import load_scheduler_state, scheduler_state


def next_tick(pipe: FramePipeline) -> int:
    """The first tick not yet run (``pipe.ticks`` once done)."""
    return pipe.ticks if pipe.done else pipe.items[pipe.position].tick


def _oldest_read(pipe: FramePipeline, tick: int) -> int:
    """The oldest block whose cache entries the ticks from ``tick`` on still read."""
    if tick >= pipe.ticks:
        return pipe.blocks
    return queue_at(tick, pipe.blocks, pipe.config.steps, pipe.config.block_stride)[0] - 1


def export_stage_state(pipe: FramePipeline) -> dict[str, Any]:
    """This stage's share of the state at the current tick boundary (every stage calls it together:
    stage 0 first receives the model outputs of the items already run)."""
    if pipe.rank == 0 and pipe.stages > 1:
        pipe._settle(None)  # every item before the boundary was forwarded: its output is on its way
    tick = next_tick(pipe)
    oldest = _oldest_read(pipe, tick)
    cache = pipe.adapter.cache
    entries = [
        {"layer": layer, "block": block, "edge": edge, "key": kv.key.cpu(), "value": kv.value.cpu()}
        for edge, store in (("head", cache.head), ("tail", cache.tail))
        for (layer, block), kv in sorted(store.items())
        if block >= oldest
    ]
    state: dict[str, Any] = {
        "branch": getattr(pipe.adapter, "branch", None),  # CFG parallel: its cache holds this guidance branch only
        "tick": tick,
        "blocks": pipe.blocks,
        "steps": pipe.config.steps,
        "block_stride": pipe.config.block_stride,
        "cache": entries,
    }
    if pipe.rank == 0:
        state["latents"] = {b: latent.detach().cpu().clone() for b, latent in sorted(pipe.latents.items())}
        state["schedulers"] = {b: scheduler_state(s) for b, s in sorted(pipe.schedulers.items())}
    return state


def merge_stage_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One job state from every stage's share (stage 0's first): the stage count drops out."""
    ticks = {s["tick"] for s in states}
    if len(ticks) != 1:
        raise ValueError(f"stages are at different ticks: {[s['tick'] for s in states]}")
    head = states[0]
    if "latents" not in head:
        raise ValueError("the first state must be stage 0's (it holds the latents)")
    return {
        "tick": head["tick"],
        "blocks": head["blocks"],
        "steps": head["steps"],
        "block_stride": head["block_stride"],
        "blocks_finished": blocks_finished(head["tick"], head["blocks"], head["steps"], head["block_stride"]),
        "latents": head["latents"],
        "schedulers": head["schedulers"],
        "cache": _branches_batched(states),
        "decoder": _decoder_state(states),
    }


BRANCH_ROWS = {"uncond": 0, "cond": 1}
"""Where a guidance branch's rows sit in a batched cache entry: the negative prompt's first, as the frame pipeline
batches them (``parallel.frames.text.batch_guided``)."""


def _branches_batched(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every stage's cache entries; from workers that each hold one guidance branch (the frame pipeline under CFG
    parallel: a branch per worker, or per pipeline of several stages) each entry's two branches joined into the
    batch one worker renders with both, so the state does not depend on the layout. A whole-video split's (one
    block, no context: nothing in it is read; its workers' bands share keys) as it is."""
    as_is = [entry for s in states for entry in s["cache"]]
    if sorted({str(s.get("branch")) for s in states}) != sorted(BRANCH_ROWS):
        return as_is
    keyed: list[dict] = [{}, {}]  # per branch, in batch order: every stage's entries of its layers
    for s in states:
        entries = {(e["layer"], e["block"], e["edge"]): e for e in s["cache"]}
        held = keyed[BRANCH_ROWS[s["branch"]]]
        if held.keys() & entries.keys():  # two workers of a branch hold one layer: bands, not stages
            return as_is
        held.update(entries)
    if set(keyed[0]) != set(keyed[1]):
        raise ValueError("CFG parallel: the two guidance branches hold different cache entries")
    return [  # in the order a stage exports them
        {**entry, "key": torch.cat([k[name]["key"] for k in keyed]), "value": torch.cat([k[name]["value"] for k in keyed])}
        for name, entry in keyed[0].items()
    ]


def _decoder_state(states: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The decoding stage's decoder state (one stage decodes whole blocks; None from a stateless decoder)."""
    held = [s["decoder"] for s in states if s.get("decoder") is not None]
    if len(held) > 1:
        raise ValueError(f"{len(held)} stages exported a decoder state: one stage decodes whole blocks")
    return held[0] if held else None


def load_stage_state(pipe: FramePipeline, state: dict[str, Any]) -> None:
    """Continue a freshly built pipeline (any stage count) from a merged job state."""
    stride = state.get("block_stride", 1)  # checkpoints written before the option had stride 1
    if (state["blocks"], state["steps"], stride) != (pipe.blocks, pipe.config.steps, pipe.config.block_stride):
        raise ValueError(
            f"checkpoint: it is of {state['blocks']} blocks x {state['steps']} steps at block_stride {stride}, "
            f"this render has {pipe.blocks} x {pipe.config.steps} at {pipe.config.block_stride}"
        )
    if pipe.position != 0:
        raise ValueError("checkpoint: load it into a pipeline that has not run yet")
    tick = state["tick"]
    pipe.position = next((i for i, item in enumerate(pipe.items) if item.tick >= tick), len(pipe.items))
    pipe.finished = list(range(blocks_finished(tick, pipe.blocks, pipe.config.steps, pipe.config.block_stride)))
    branch = getattr(pipe.adapter, "branch", None)
    rows = slice(BRANCH_ROWS[branch], BRANCH_ROWS[branch] + 1) if branch is not None else slice(None)
    for entry in state["cache"]:
        if entry["layer"] in pipe.layers:
            store = pipe.adapter.cache.head if entry["edge"] == "head" else pipe.adapter.cache.tail
            store[(entry["layer"], entry["block"])] = _edge(entry, pipe.device, rows)
    if pipe.rank == 0:
        for block, latent in state["latents"].items():
            scheduler = pipe.new_scheduler()
            load_scheduler_state(scheduler, state["schedulers"][block], pipe.device)
            pipe.schedulers[block] = scheduler
            pipe.latents[block] = latent.to(pipe.device)  # the dtype it stepped in (LTX-Video's: float32 under bfloat16)
    elif pipe.position > 0 and not pipe.done:
        pipe.recv_hidden.post()  # advance() posts the first receive only at position 0


def _edge(entry: dict[str, Any], device: torch.device, rows: slice = slice(None)) -> EdgeKV:
    """A cache entry on ``device``; ``rows``: the batch rows of one guidance branch (CFG parallel), taken from an
    entry that holds both (batch 2)."""
    key, value = entry["key"], entry["value"]
    if key.shape[0] == 2:
        key, value = key[rows], value[rows]
    return EdgeKV(key.to(device), value.to(device))


def export_decoder_state(decoder: Any) -> dict[str, Any] | None:
    """The decoding stage's block decoder at the boundary: a causal VAE's per-convolution cache of the last
    frames decoded (``pipelines.wan_decode.WanBlockDecoder``: ``cache``, ``first``), which the next
    block's frames depend on; None for a decoder without state (a per-frame VAE). A decoder with its own
    ``export_state``/``load_state`` (another family's cache) is asked instead."""
    if hasattr(decoder, "export_state"):
        return decoder.export_state()
    cache = getattr(decoder, "cache", None)
    if cache is None:
        return None
    return {
        "first": bool(decoder.first),
        "cache": [v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for v in cache],
    }


def load_decoder_state(decoder: Any, state: dict[str, Any]) -> None:
    """Continue a fresh block decoder from ``export_decoder_state``'s output."""
    if hasattr(decoder, "load_state"):
        decoder.load_state(state)
        return
    if len(state["cache"]) != len(decoder.cache):
        raise ValueError(
            f"checkpoint: the decoder cache has {len(state['cache'])} entries, this VAE {len(decoder.cache)}"
        )
    device = decoder.vae.device
    decoder.cache = [v.to(device) if isinstance(v, torch.Tensor) else v for v in state["cache"]]
    decoder.first = state["first"]
