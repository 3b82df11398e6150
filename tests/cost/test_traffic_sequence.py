"""Sequence parallelism's traffic (diffusers' Ulysses and Ring): the formula against the bytes diffusers'
collectives send in a real gloo run of a tiny FLUX.1 transformer (``SequenceHandle.bytes_sent``), and against
a count by hand on FLUX.1-dev at 1024x1024."""

from __future__ import annotations

import _cost_workers as CW
import _sequence_models as S
import pytest
from _cost_common import measured, run, tiny_flux_spec

from parallel.cost.predict import cached_profile, sequence_ops
from parallel.cost.profile import profile_model
from parallel.cost.traffic import sequence_traffic

LAYOUTS = {2: [(2, 1), (1, 2)], 4: [(4, 1), (2, 2), (1, 4)]}
"""(ulysses, ring) layouts run per world size (``_cost_workers.sequence_bytes``)."""


@pytest.mark.parametrize("world", [2, 4])
def test_sequence_bytes_match_the_counters(world):
    """Ulysses' all-to-alls (Q, K, V and the output of both blocks' joint attention), Ring's K/V gather and
    the output's gather, for ulysses x ring = 2x1, 1x2 (2 workers) and 4x1, 2x2, 1x4 (4 workers)."""
    results = run(CW.sequence_bytes, world)
    prof = profile_model(tiny_flux_spec(S.tiny_flux(), S.TEXT_TOKENS, batch=1), S.LATENT[2], S.LATENT[3])
    assert prof.attention.tokens == [prof.tokens + S.TEXT_TOKENS] * 2  # one double- and one single-stream block
    for ulysses, ring in LAYOUTS[world]:
        t = sequence_traffic(prof, world, ring)
        for r in results:
            counted = r[(ulysses, ring)]["bytes"]
            assert measured(counted, "all_to_all") == pytest.approx(t.bytes_per_step["ulysses"]), (ulysses, ring)
            gathered = t.bytes_per_step["ring"] + t.bytes_per_step["gather"]
            assert measured(counted, "all_gather") == pytest.approx(gathered), (ulysses, ring)
        assert (t.bytes_per_step["ulysses"] > 0) == (ulysses > 1) and (t.bytes_per_step["ring"] > 0) == (ring > 1)


@pytest.mark.parametrize("world", [2, 4])
def test_sequence_ops_match_the_count(world):
    """The ops diffusers' Ulysses and Ring add to a forward (``predict.sequence_ops``: per attention layer,
    17 for Ulysses, 7 plus 13 per further ring worker for Ring) within 2 of those dispatched for real."""
    results = run(CW.sequence_bytes, world)
    prof = profile_model(tiny_flux_spec(S.tiny_flux(), S.TEXT_TOKENS, batch=1), S.LATENT[2], S.LATENT[3])
    for ulysses, ring in LAYOUTS[world]:
        added = results[0][(ulysses, ring)]["ops"] - results[0]["ops"]
        assert abs(sequence_ops(prof, "sequence", world, ring) - added) <= 2, (ulysses, ring, added)


def test_flux_1024_by_hand():
    """FLUX.1-dev, 1024x1024, batch 1, bfloat16: 57 joint attentions over 4096 image + 512 text tokens, 3072
    wide. Over 8 workers each holds 576 tokens; Ulysses sends 7/8 of its Q, K, V and output per layer, Ring
    its K and V to each of the 7 others; the output (4096 x 64 packed) is gathered once."""
    prof = cached_profile("flux.1-dev", 1024, 1024, 1, None, "bfloat16")
    assert prof.batch == 1 and prof.attention.heads == [24] * 57
    share = 576 * 3072 * 2  # one tensor of a worker's tokens
    ulysses = sequence_traffic(prof, 8, ring=1)
    assert ulysses.bytes_per_step["ulysses"] == pytest.approx(57 * 4 * share * 7 / 8)
    assert ulysses.bytes_per_step["gather"] == pytest.approx(4096 * 64 * 2 / 8 * 7)
    ring = sequence_traffic(prof, 8, ring=8)
    assert ring.bytes_per_step["ulysses"] == 0 and ring.bytes_per_step["ring"] == pytest.approx(57 * 2 * share * 7)
    assert ring.overlapped == () and sequence_traffic(prof, 8, 8, ring_overlap=True).overlapped == ("ring",)
    with pytest.raises(ValueError, match="ring"):
        sequence_traffic(prof, 8, ring=3)
