"""Sequence parallelism refuses what it cannot run, before any collective: bad degrees, a model without a
context-parallel plan, attention that would not take the plan's config."""

import _parallel_models as M
import _sequence_models as S
import pytest

from parallel.sequence import SequenceConfig, parallelize_sequence
from parallel.sequence.parallelize import _check_attention_took_it


@pytest.mark.parametrize("ulysses,ring", [(1, 1), (0, 2), (2, 0), (True, 2)])
def test_bad_degrees_are_refused(ulysses, ring):
    with pytest.raises(ValueError):
        SequenceConfig(ulysses=ulysses, ring=ring)


def test_degree_is_ulysses_times_ring():
    assert SequenceConfig(ulysses=2, ring=3).degree == 6


def test_a_model_without_a_plan_is_refused():
    with pytest.raises(ValueError, match="_cp_plan"):
        parallelize_sequence(M.tiny_pixart(), None, SequenceConfig(ulysses=2))


def test_attention_left_without_the_config_is_refused():
    # what enable_parallelism leaves behind when a processor has no slot for the config
    with pytest.raises(ValueError, match="FluxAttnProcessor"):
        _check_attention_took_it(S.tiny_flux())
