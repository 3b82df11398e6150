"""BubbleFiller: the background producer yields the source's items in order, raises its errors, stops."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from parallel.training.bubble_fill import BubbleFiller
from pipelines.builtin.image import build_image_pipeline
from runtime.training.data import NoisedLatentStream, OnlineLatents, shapes


def _slow_counter(limit: int, delay: float = 0.0):
    for i in range(limit):
        time.sleep(delay)
        yield torch.full((2,), float(i))


def test_items_arrive_in_order_and_the_end_is_passed_on():
    filler = BubbleFiller(_slow_counter(7, 0.001), depth=2)
    got = [int(t[0]) for t in filler]
    filler.close()
    assert got == list(range(7))


def test_producer_runs_ahead_while_the_consumer_is_busy():
    produced = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    filler = BubbleFiller(source(), depth=3)
    assert next(filler) == 0
    time.sleep(0.2)  # the consumer "computes"; the producer fills the queue meanwhile
    assert len(produced) >= 4  # one taken, three queued, possibly one more being computed
    filler.close()
    assert not filler._thread.is_alive()


def test_an_error_in_the_source_is_raised_in_the_consumer():
    def source():
        yield 1
        raise ValueError("bad micro-batch")

    filler = BubbleFiller(source(), depth=2)
    assert next(filler) == 1
    with pytest.raises(ValueError, match="bad micro-batch"):
        next(filler)
    filler.close()


def test_close_stops_a_producer_blocked_on_a_full_queue():
    filler = BubbleFiller(_slow_counter(10**6), depth=1)
    next(filler)
    before = threading.active_count()
    filler.close()
    assert not filler._thread.is_alive() and threading.active_count() <= before


def test_online_stream_through_the_filler_equals_the_stream_in_series():
    pipe = build_image_pipeline(seed=1)
    vae = pipe.vae.eval().requires_grad_(False)

    def stream():
        data = shapes(32, 0)
        source = OnlineLatents(vae, pipe.tokenizer, data, 0.5)
        return NoisedLatentStream(pipe.scheduler, (4, 4, 4), 3, 5, 0, 10, 0.3, source, len(source))

    series = [item for item, _ in zip(stream(), range(4))]
    filler = BubbleFiller(stream(), depth=2)
    filled = [next(filler) for _ in range(4)]
    filler.close()
    for (inputs_a, noise_a), (inputs_b, noise_b) in zip(series, filled):
        assert torch.equal(noise_a, noise_b)
        for a, b in zip(inputs_a, inputs_b):
            assert torch.equal(a, b)
    # The micro-batches differ from one another (indices advance), and images are flipped at random.
    assert not torch.equal(series[0][0][0], series[1][0][0])
