"""A worker reports the attention kernel it enabled for the model it loaded (metadata.json's "attention")."""

from __future__ import annotations

import pytest
import torch

import runtime.worker as worker_module
from cluster.jobs.image import RenderSpec
from runtime.device import device_slot
from runtime.jobs.image_session import open_render_session
from runtime.worker import Worker


@pytest.fixture
def cpu_worker():
    threads = torch.get_num_threads()
    worker = Worker(0, device_slot("cpu"))  # sets one torch thread, as in a pool's actor
    yield worker
    worker._close_session()
    torch.set_num_threads(threads)


def _begin(worker, model_dir) -> dict:
    spec = RenderSpec(str(model_dir), "float32", "red stripes", "", 64, 64, 1, 0, 1.0, sampler="ddim")
    return worker.begin(open_render_session, spec)


def test_begin_reports_what_enable_fast_attention_chose(cpu_worker, builtin_image_dir, monkeypatch):
    calls = []

    def chosen(pipe, device):
        calls.append(device)
        return "kernel-of-" + device

    monkeypatch.setattr(worker_module, "enable_fast_attention", chosen)
    first = _begin(cpu_worker, builtin_image_dir)
    again = _begin(cpu_worker, builtin_image_dir)  # cached pipeline: chosen once, at load
    assert calls == ["cpu"]
    assert first["attention"] == again["attention"] == "kernel-of-cpu"
    assert again["cache_hit"] is True


def test_a_cpu_worker_renders_with_sdpa(cpu_worker, builtin_image_dir):
    assert _begin(cpu_worker, builtin_image_dir)["attention"] == "sdpa"
    assert cpu_worker.attention == {(str(builtin_image_dir), "float32"): "sdpa"}
