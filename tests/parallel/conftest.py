"""Fixtures for the parallel tests: each distributed run is spawned once per session and shared."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

if importlib.util.find_spec("parallel") is None:  # repo not installed: make the root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import _parallel_workers as W  # noqa: E402
from _parallel_dist import run_ranks  # noqa: E402

_runs: dict[tuple[str, int], list[Any]] = {}
_refs: dict[str, dict[str, torch.Tensor]] = {}


def _run(kind: str, world: int) -> list[Any]:
    if (kind, world) not in _runs:
        fn = {"patch": W.patch_scenarios, "cfg": W.cfg_scenarios}[kind]
        _runs[(kind, world)] = run_ranks(fn, world, timeout=240)
    return _runs[(kind, world)]


@pytest.fixture(scope="session")
def patch_run():
    """``patch_run(world)``: per-rank results of ``patch_scenarios`` on ``world`` processes."""
    return lambda world: _run("patch", world)


@pytest.fixture(scope="session")
def cfg_run():
    """``cfg_run(world)``: per-rank results of ``cfg_scenarios`` on ``world`` processes."""
    return lambda world: _run("cfg", world)


@pytest.fixture(scope="session")
def reference():
    """``reference(model_name)``: single-device outputs of the same scenarios."""

    torch.set_num_threads(1)  # shared 2-core machine: the reference runs like one worker

    def get(name: str) -> dict[str, torch.Tensor]:
        if name not in _refs:
            _refs[name] = W.reference(name)
        return _refs[name]

    return get
