"""Queue invariant: every block gets exactly `steps` steps, in decreasing noise order, and leaves in order."""

from __future__ import annotations

import pytest
import torch
from _video_models import LATENT, make_scheduler, tiny_text, tiny_wan

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from parallel.frames.schedule import blocks_finished, queue_at, queue_schedule, ticks
from pipelines.families.wan.frames import WanFrameAdapter


@pytest.mark.parametrize("blocks,steps", [(1, 1), (1, 4), (5, 3), (3, 7)])
def test_schedule_gives_each_block_every_step_once(blocks, steps):
    items = queue_schedule(blocks, steps)
    assert len(items) == blocks * steps
    for block in range(blocks):
        mine = [item for item in items if item.block == block]
        assert [item.step for item in mine] == list(range(steps))
        assert [item.tick for item in mine] == list(range(block, block + steps))  # one step per tick
    for tick in range(blocks + steps - 1):
        in_tick = [item for item in items if item.tick == tick]
        assert [item.block for item in in_tick] == queue_at(tick, blocks, steps)
        assert len(in_tick) <= steps  # the queue never holds more than one block per noise level
        # the newest block in a tick is at the highest noise level (step 0) while blocks still enter
        if tick < blocks:
            assert in_tick[-1].step == 0


@pytest.mark.parametrize("blocks,steps,stride", [(4, 5, 2), (3, 4, 4), (5, 6, 3), (2, 1, 1)])
def test_strided_schedule_starts_blocks_stride_ticks_apart(blocks, steps, stride):
    items = queue_schedule(blocks, steps, stride)
    assert len(items) == blocks * steps and max(i.tick for i in items) + 1 == ticks(blocks, steps, stride)
    for block in range(blocks):
        mine = [item for item in items if item.block == block]
        assert [item.tick for item in mine] == list(range(block * stride, block * stride + steps))
        assert [item.step for item in mine] == list(range(steps))
    for tick in range(ticks(blocks, steps, stride)):
        in_tick = [item.block for item in items if item.tick == tick]
        assert in_tick == queue_at(tick, blocks, steps, stride) and in_tick  # no idle tick
        left = sum(1 for block in range(blocks) if block * stride + steps - 1 < tick)
        assert blocks_finished(tick, blocks, steps, stride) == left


def test_stride_out_of_range_is_refused():
    with pytest.raises(ValueError, match="block_stride"):
        queue_schedule(3, 4, 5)
    with pytest.raises(ValueError, match="block_stride"):
        queue_schedule(3, 4, 0)


def test_run_applies_steps_in_noise_order_and_streams_blocks_in_order():
    torch.set_num_threads(1)
    steps, alive = 4, []
    pipe = None

    def sink(block, latent):
        alive.append(len(pipe.latents))
        assert latent.shape == (1, LATENT[0], 2, *LATENT[1:])

    config = FramePipelineConfig(frames=14, block_frames=2, context_frames=1, steps=steps, seed=0)
    pipe = FramePipeline(tiny_wan(), config, LATENT, tiny_text(), make_scheduler, sink, make_adapter=WanFrameAdapter)
    pipe.run()
    timesteps = pipe.timesteps.tolist()
    assert pipe.finished == list(range(7))
    for block in range(7):
        applied = [step for b, step in pipe.applied if b == block]
        assert applied == list(range(steps))
        noise = [timesteps[step] for step in applied]
        assert all(a > b for a, b in zip(noise, noise[1:]))  # decreasing noise
    # a block leaves as soon as it took its last step: the queue holds at most `steps` blocks
    assert max(alive) < steps and not pipe.latents and not pipe.schedulers
    assert pipe.adapter.cache.blocks() <= {5, 6}  # the cache forgets blocks nothing reads any more
