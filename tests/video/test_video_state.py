"""A frame pipeline stopped at a tick boundary and continued from its exported state, on the same or
another number of stages (real gloo processes), equals the uninterrupted render."""

from __future__ import annotations

import io

import pytest
import torch
import torch.distributed as dist
from _parallel_dist import run_ranks
from _video_models import LATENT, make_scheduler, tiny_text, tiny_wan

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families.wan.frames import WanFrameAdapter
from runtime.jobs.video_state import export_stage_state, load_stage_state, merge_stage_states

CONFIG = dict(frames=10, block_frames=2, context_frames=1, steps=4, seed=5)  # 5 blocks, 8 ticks
STOP = 3  # ticks 0..2 run: blocks 0..2 in the queue, none finished; block 0 leaves after tick 3


class _Float32Output(WanFrameAdapter):
    """The noise prediction upcast to float32, as LTX-Video's frame plan hands it to the sampler: a bfloat16 model's
    latents then step in float32."""

    output_dtype = torch.float32

    def head(self, hidden: torch.Tensor, cond) -> torch.Tensor:
        return super().head(hidden, cond).float()


def _pipeline(outputs: dict, group=None, dtype: torch.dtype | None = None, **changes) -> FramePipeline:
    """``dtype``: the model's (bfloat16: the latents in float32 throughout, as LTX-Video's pipeline keeps them)."""
    model = tiny_wan(layers=4) if dtype is None else tiny_wan(layers=4).to(dtype)
    return FramePipeline(
        model,
        FramePipelineConfig(**{**CONFIG, **changes}),
        LATENT,
        tiny_text(),
        make_scheduler,
        on_block_done=lambda block, latent: outputs.__setitem__(block, latent.clone()),
        group=group,
        make_adapter=WanFrameAdapter if dtype is None else _Float32Output,
        latent_dtype=None if dtype is None else torch.float32,
    )


def _round_trip(state: dict) -> dict:
    """Through the checkpoint file format (weights-only torch.load, as the controller reads it)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def stop_at(rank: int, world: int, ticks: int) -> dict:
    """Run `ticks` ticks on this stage and export its state (every rank of the group together)."""
    pipe = _pipeline({}, dist.group.WORLD if world > 1 else None)
    assert pipe.advance(ticks) == ticks
    state = export_stage_state(pipe)
    pipe.close()
    return state


def resume_from(rank: int, world: int, state: dict) -> dict:
    """Continue from a merged state on this stage; the blocks that leave from here on (stage 0)."""
    outputs: dict = {}
    pipe = _pipeline(outputs, dist.group.WORLD if world > 1 else None)
    load_stage_state(pipe, state)
    pipe.advance()
    pipe.close()
    return {"latents": outputs, "finished": pipe.finished}


def _reference() -> dict:
    torch.set_num_threads(1)
    outputs: dict = {}
    pipe = _pipeline(outputs)
    pipe.advance()
    pipe.close()
    return outputs


def _assert_tail_equal(got: dict, ref: dict, first_block: int) -> None:
    assert sorted(got) == list(range(first_block, len(ref)))
    for block in got:
        torch.testing.assert_close(got[block], ref[block], atol=1e-4, rtol=1e-4)


def test_state_is_small_and_keyed_by_layer():
    torch.set_num_threads(1)
    state = merge_stage_states([stop_at(0, 1, STOP + 1)])
    assert state["tick"] == STOP + 1 and state["blocks_finished"] == 1
    assert sorted(state["latents"]) == [1, 2, 3] and sorted(state["schedulers"]) == [1, 2, 3]  # 4 enters next
    assert {e["block"] for e in state["cache"]} == {0, 1, 2, 3}  # block 0 is still read by block 1
    assert {e["layer"] for e in state["cache"]} == {0, 1, 2, 3}


def test_resume_on_one_stage_equals_uninterrupted():
    ref = _reference()
    state = _round_trip(merge_stage_states([stop_at(0, 1, STOP + 1)]))
    got = resume_from(0, 1, state)
    _assert_tail_equal(got["latents"], ref, first_block=1)
    assert got["finished"] == list(range(5))


def test_state_moves_between_stage_counts():
    """Stopped on 2 stages, continued on 1; stopped on 1, continued on 3."""
    ref = _reference()
    two = run_ranks(stop_at, 2, STOP, timeout=180)
    got = resume_from(0, 1, _round_trip(merge_stage_states(two)))
    _assert_tail_equal(got["latents"], ref, first_block=0)
    one = _round_trip(merge_stage_states([stop_at(0, 1, STOP + 2)]))
    three = run_ranks(resume_from, 3, one, timeout=180)
    _assert_tail_equal(three[0]["latents"], ref, first_block=2)
    assert not three[1]["latents"] and not three[2]["latents"]


def test_a_strided_queue_resumes_at_its_own_ticks():
    """block_stride 3: block 1 enters at tick 3, block 0 leaves after tick 3; stopped before tick 5."""
    torch.set_num_threads(1)
    ref: dict = {}
    whole = _pipeline(ref, block_stride=3)
    assert whole.ticks == 4 * 3 + 4
    whole.advance()
    first = _pipeline({}, block_stride=3)
    first.advance(5)
    state = _round_trip(merge_stage_states([export_stage_state(first)]))
    assert state["blocks_finished"] == 1 and sorted(state["latents"]) == [1]
    got: dict = {}
    resumed = _pipeline(got, block_stride=3)
    load_stage_state(resumed, state)
    resumed.advance()
    _assert_tail_equal(got, ref, first_block=1)
    with pytest.raises(ValueError, match="block_stride 3"):
        load_stage_state(_pipeline({}), state)


def test_a_bfloat16_model_resumes_its_float32_latents_unrounded():
    """The latents of a bfloat16 model may step in float32 (LTX-Video's); a resume put them back in the model's first
    parameter's dtype, rounding them to bfloat16, until it kept the dtype they were saved in."""
    torch.set_num_threads(1)
    ref: dict = {}
    _pipeline(ref, dtype=torch.bfloat16).advance()
    first = _pipeline({}, dtype=torch.bfloat16)
    first.advance(STOP + 1)
    state = _round_trip(merge_stage_states([export_stage_state(first)]))
    assert {latent.dtype for latent in state["latents"].values()} == {torch.float32}
    got: dict = {}
    resumed = _pipeline(got, dtype=torch.bfloat16)
    load_stage_state(resumed, state)
    assert {latent.dtype for latent in resumed.latents.values()} == {torch.float32}
    resumed.advance()
    assert sorted(got) == [1, 2, 3, 4]
    for block, latent in got.items():
        assert torch.equal(latent, ref[block]), block
