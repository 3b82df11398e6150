"""The worker's set-up of a sequence-parallel render (runtime.jobs.image_sequence) on gloo: its predictor's
guided loop equals one device, every worker keeps the whole latent, its report carries the traffic."""

import _sequence_models as S
import pytest
import torch
from test_sequence_parity import TOL, _run


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return S.reference()


def test_ulysses_over_two_workers_equals_one_device(reference):
    for rank, r in enumerate(_run(2)):
        got = r["render"]
        torch.testing.assert_close(got["loop"], reference["loop"], **TOL)
        assert got["rows"] == (0, S.LATENT[2]) and got["band"] == 0
        report = got["report"]
        assert report["branch"] == "both" and report["sequence"]["ulysses"] == 2 and report["sequence"]["ring"] == 1
        assert set(report["bytes_sent"]) == {"all_to_all", "all_gather"}
        assert set(report["bytes_sent"]["all_to_all"]) == {1 - rank}
        assert got["restored"]


def test_ring_x_cfg_over_four_workers_equals_one_device(reference):
    results = [r["render_cfg"] for r in _run(4)]
    assert [r["report"]["branch"] for r in results] == ["cond", "cond", "uncond", "uncond"]
    for rank, r in enumerate(results):
        torch.testing.assert_close(r["loop"], reference["loop"], **TOL)
        sent = r["report"]["bytes_sent"]
        assert r["report"]["sequence"]["ring"] == 2 and r["report"]["sequence"]["ulysses"] == 1
        assert set(sent["cfg"]) == {(rank + 2) % 4}  # the partner in the other half
        assert set(sent["all_gather"]) == ({0, 1} if rank < 2 else {2, 3}) - {rank}
        assert r["restored"]
