"""Resuming refuses optimizer state written for other parameters (torch matches it by position only)."""

from pathlib import Path

import pytest
import torch

from runtime.training.checkpoint import check_optimizer_state


def _trained_adam(params: list[torch.nn.Parameter]) -> torch.optim.Adam:
    optimizer = torch.optim.Adam(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    optimizer.step()
    return optimizer


def test_state_of_the_same_parameters_loads():
    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(5))
    state = _trained_adam([a, b]).state_dict()
    fresh = torch.optim.Adam([a, b], lr=1e-3)
    check_optimizer_state(state, fresh, Path("ck"), 0)
    fresh.load_state_dict(state)


def test_state_of_reordered_parameters_is_refused_before_loading():
    # the stage's parameters in another order: what a changed layer list gives (seen on a real resume)
    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(5))
    state = _trained_adam([a, b]).state_dict()
    with pytest.raises(ValueError, match=r"rank 1 in ck belongs to other parameters \(parameter 0: saved \(2, 3\)"):
        check_optimizer_state(state, torch.optim.Adam([b, a], lr=1e-3), Path("ck"), 1)


def test_state_with_another_parameter_count_is_refused():
    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(5))
    state = _trained_adam([a, b]).state_dict()
    with pytest.raises(ValueError, match="has 2 parameters, this stage 1"):
        check_optimizer_state(state, torch.optim.Adam([a], lr=1e-3), Path("ck"), 0)
