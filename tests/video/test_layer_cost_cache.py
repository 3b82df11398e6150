"""A worker times a model's layers once per input shapes: the next render of the same model plans without
re-timing; another block shape, text shape or model is timed anew."""

from __future__ import annotations

import gc

import torch
from _video_models import tiny_text, tiny_wan

from parallel.frames import partition
from pipelines.families.wan.frames import WanFrameAdapter


class CountingAdapter(WanFrameAdapter):
    """The real Wan adapter, counting the layer forwards it runs."""

    runs = 0

    def run_layer(self, layer, hidden, cond):
        CountingAdapter.runs += 1
        return super().run_layer(layer, hidden, cond)


def _costs(model, block_shape, text) -> tuple[list[float], int]:
    adapter = CountingAdapter(model, block_shape, 0)
    try:
        before = CountingAdapter.runs
        costs = partition.layer_costs(adapter, text, batch=1)
        return costs, CountingAdapter.runs - before
    finally:
        adapter.remove()


def test_layer_costs_are_kept_per_model_and_shape():
    torch.set_num_threads(1)
    model, text = tiny_wan(layers=2), tiny_text()
    first, timed = _costs(model, (4, 3, 4, 6), text)
    assert timed > 0 and len(first) == 2 and all(c > 0 for c in first)
    again, timed_again = _costs(model, (4, 3, 4, 6), text)
    assert timed_again == 0 and again == first  # kept: no forward ran
    _, other_shape = _costs(model, (4, 2, 4, 6), text)
    assert other_shape > 0
    _, other_text = _costs(model, (4, 3, 4, 6), torch.cat([text, text], dim=1))
    assert other_text > 0
    _, other_model = _costs(tiny_wan(layers=2), (4, 3, 4, 6), text)
    assert other_model > 0


def test_a_dropped_model_takes_its_costs_with_it():
    model = tiny_wan(layers=1)
    _costs(model, (4, 2, 4, 6), tiny_text())
    kept = len(partition._MEASURED)
    del model
    gc.collect()
    assert len(partition._MEASURED) == kept - 1
