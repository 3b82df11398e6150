"""Sequence parallelism against xDiT's published FLUX.1-dev figures on 4 H100s (references.yaml,
xdit-flux-dev-h100): shown beside them, not held to 15% (xDiT runs its own Ulysses and Ring, the model
diffusers'), but held to their direction and to the order of the layouts."""

from __future__ import annotations

import pytest

from pipelines.cost_validation import validate


@pytest.fixture(scope="module")
def xdit():
    return {(c.degree, c.ring): c for c in validate("xdit-flux-dev-h100")}


def test_every_layout_is_predicted_faster_than_published_but_within_half_again(xdit):
    """A step of FLUX.1-dev at 1024 px on an H100 is bound by eager dispatch (~20 us an op on the host), so a
    split mostly saves device time the host hides; the model still counts no host time for the collectives
    themselves, nor for xDiT's own kernels, so it is optimistic everywhere."""
    for layout, c in xdit.items():
        assert 0.0 < c.error <= 0.5, (layout, c.predicted, c.reference_value)


def test_ulysses_over_all_four_is_the_fastest_layout_as_published(xdit):
    """Ulysses adds 17 ops per attention layer and Ring 7 plus 13 per further ring worker (diffusers' counts):
    on a dispatch-bound step that decides the order of the 4-GPU layouts, Ulysses-4 first."""
    four = {layout: c for layout, c in xdit.items() if layout[0] == 4}
    assert max(four, key=lambda k: four[k].reference_value) == (4, 1)
    assert max(four, key=lambda k: four[k].predicted) == (4, 1)
    assert xdit[(4, 4)].predicted < xdit[(4, 1)].predicted
