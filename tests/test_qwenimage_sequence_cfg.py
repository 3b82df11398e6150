"""Qwen-Image's true CFG split between two halves of the workers (``parallel.cfg``), each half splitting its branch's
sequence, equals one worker through the pool: each branch is padded on its own (9 tokens to 10; the negative's 6
as encoded), and the padded branch's Ring runs as Ulysses."""

from __future__ import annotations

import pytest
import torch
from _tiny_qwenimage import save_tiny_qwenimage
from test_qwenimage_sequence import ODD, TOL, _spec

from runtime.jobs.image import run_render
from runtime.pool import DevicePool, PoolConfig


@pytest.fixture(scope="module")
def pool4(ray_local):
    pool = DevicePool(PoolConfig(workers=4, device="cpu", group_timeout_s=60))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_tiny_qwenimage(tmp_path_factory.mktemp("qwen-seq-cfg") / "tiny-qwenimage")


@pytest.mark.parametrize("ring", [1, 2])
def test_sequence_with_cfg_parallel_equals_one_worker(pool4, qwen_dir, ring):
    one = run_render(pool4, _spec(qwen_dir, ODD, 4.0), progress=False, decode=False)
    spec = _spec(qwen_dir, ODD, 4.0, strategy="sequence", degree=4, ring=ring, cfg=True)
    result = run_render(pool4, spec, progress=False, decode=False)
    torch.testing.assert_close(result.latents, one.latents, **TOL)
    workers = result.metadata["workers"]
    assert [w["branch"] for w in workers] == ["cond", "cond", "uncond", "uncond"]
    # the padded conditional branch cannot run Ring; the negative's 6 tokens could, but both halves run alike
    assert all((w["sequence"]["ulysses"], w["sequence"]["ring"]) == (2, 1) for w in workers)
