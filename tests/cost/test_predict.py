"""Prediction mechanics: compute shares, blocking vs overlapped traffic, memory, on small profiles."""

from __future__ import annotations

import dataclasses

import pytest

from parallel.cost.predict import cached_profile, compute_seconds, predict
from parallel.cost.specs import load_specs

SPECS = load_specs()


@pytest.fixture(scope="module")
def prof():
    return cached_profile("builtin-image", 512, 512, 1, 2, "float32")


def test_one_worker_is_flops_over_rate_plus_dispatch(prof):
    cpu = SPECS.device("cpu-core")
    p = predict(prof, "none", 1, cpu, "loopback")
    assert p.step_s == pytest.approx(prof.flops / cpu.flops + prof.ops * cpu.op_overhead_s)
    assert p.speedup == pytest.approx(1.0) and p.comm_s == 0.0
    gpu = dataclasses.replace(SPECS.device("a100-80gb"), op_overhead_s=1.0)
    assert compute_seconds(1e12, 3, gpu, corun=False) == pytest.approx(3.0)  # launch-bound: max, not sum


def test_sync_waits_for_its_traffic(prof):
    p = predict(prof, "patch", 2, "cpu-core", "loopback", "sync")
    link = SPECS.link("loopback")
    assert p.comm_s == pytest.approx(link.seconds(p.traffic.total_bytes, sum(p.traffic.messages_per_step.values())))
    assert p.step_s == pytest.approx(p.compute_s + p.comm_s)


def test_displaced_hides_traffic_only_on_links_with_copy_engines(prof):
    slow_overlapping = dataclasses.replace(SPECS.link("ethernet-10g"), name="x", overlaps_compute=True)
    slow_blocking = dataclasses.replace(slow_overlapping, overlaps_compute=False)
    sync = predict(prof, "patch", 4, "cpu-core", slow_overlapping, "sync")
    hidden = predict(prof, "patch", 4, "cpu-core", slow_overlapping, "displaced")
    shared = predict(prof, "patch", 4, "cpu-core", slow_blocking, "displaced")
    assert hidden.step_s < sync.step_s
    assert hidden.step_s == pytest.approx(max(hidden.compute_s, slow_overlapping.seconds(
        hidden.traffic.total_bytes, sum(hidden.traffic.messages_per_step.values()))))
    assert shared.step_s == pytest.approx(sync.step_s)


def test_warmup_steps_run_at_sync_speed(prof):
    link = dataclasses.replace(SPECS.link("ethernet-10g"), name="x")
    sync = predict(prof, "patch", 4, "a100-80gb", link, "sync", steps=10)
    disp = predict(prof, "patch", 4, "a100-80gb", link, "displaced", steps=10, warmup_steps=3)
    assert disp.mean_step_s == pytest.approx((3 * sync.step_s + 7 * disp.step_s) / 10)


def test_memory_shrinks_with_bands_and_displaced_keeps_stale_kv(prof):
    one = predict(prof, "none", 1, "cpu-core", "loopback")
    sync = predict(prof, "patch", 4, "cpu-core", "loopback", "sync")
    disp = predict(prof, "patch", 4, "cpu-core", "loopback", "displaced")
    assert one.memory_bytes == pytest.approx(prof.param_bytes + prof.activation_peak_bytes)
    assert sync.memory_bytes < one.memory_bytes
    # the other three bands' K/V of every layer; an all-gather scheme keeps all four bands'
    assert disp.memory_bytes - sync.memory_bytes == pytest.approx(sum(prof.patch.kv_bytes) * 3 / 4)
    gathered = predict(prof, "patch", 4, "cpu-core", "loopback", "sync", scheme="allgather")
    assert gathered.memory_bytes - sync.memory_bytes == pytest.approx(sum(prof.patch.kv_bytes))


def test_displaced_keeps_half_with_inputs_exchanged_and_half_again_in_float16(prof):
    """``kv_source="input"`` keeps the other bands' attention inputs (half their K/V for this model) and
    ``stale_dtype="float16"`` keeps them at 2 bytes per element instead of the profile's 4."""
    sync = predict(prof, "patch", 4, "cpu-core", "loopback", "sync")
    inputs = predict(prof, "patch", 4, "cpu-core", "loopback", "displaced", kv_source="input")
    half = predict(prof, "patch", 4, "cpu-core", "loopback", "displaced", kv_source="input", stale_dtype="float16")
    assert sum(prof.patch.input_bytes) == pytest.approx(sum(prof.patch.kv_bytes) / 2)
    assert inputs.memory_bytes - sync.memory_bytes == pytest.approx(sum(prof.patch.input_bytes) * 3 / 4)
    assert half.memory_bytes - sync.memory_bytes == pytest.approx(sum(prof.patch.input_bytes) * 3 / 8)
    # the synchronous steps send full precision: stale_dtype changes nothing there
    same = predict(prof, "patch", 4, "cpu-core", "loopback", "sync", stale_dtype="float16")
    assert same.memory_bytes == sync.memory_bytes and same.traffic.bytes_per_step == sync.traffic.bytes_per_step


def test_speedup_never_exceeds_the_degree(prof):
    for n in (2, 3, 4, 8):
        for link in ("loopback", "nvlink3", "ethernet-10g"):
            assert predict(prof, "patch", n, "a100-80gb", link, "displaced").speedup <= n + 1e-9
