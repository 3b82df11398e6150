"""Shared fixtures: a real local Ray cluster shared by the modules that need one, the built-in model's directory."""

from __future__ import annotations

import logging
import os
import time

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


RAY_CPUS = 4
_shared = {"address": None}


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray cluster with 4 logical CPU slots (oversubscribing 2 cores is fine for tiny models).

    Modules share it: starting one costs 5-10 s here, and 18 modules use it. A module that leaves
    anything behind (a named actor such as a controller, CPU slots still held by actors or placement
    groups) has the cluster shut down after it, so the next module starts on a fresh one; a module that
    started another cluster (two-node tests, an embedded client) is never handed a stale one either."""
    import ray

    if not (ray.is_initialized() and _left_clean(ray)):  # reuse only a clean cluster of ours
        if ray.is_initialized():
            ray.shutdown()
        # address="local": a cluster of our own, even while another `ray start` cluster runs on this machine
        ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, logging_level=logging.WARNING)
        _shared["address"] = ray.get_runtime_context().gcs_address
    yield ray
    if ray.is_initialized() and not _left_clean(ray):
        ray.shutdown()
        _shared["address"] = None


@pytest.fixture
def ray_stopped():
    """For tests that check a command refused before starting Ray: no cluster is running when they start."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
        _shared["address"] = None


def _left_clean(ray, timeout_s: float = 3.0) -> bool:
    """The shared cluster, with no named actor alive and every CPU slot free again (killed actors release
    theirs within a second or so). Modules that kill processes or run Ray Train leave actors behind for
    longer; waiting for them costs more than the 5-10 s of a fresh cluster."""
    if ray.get_runtime_context().gcs_address != _shared["address"]:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        named = ray.util.list_named_actors(all_namespaces=True)
        if not named and ray.available_resources().get("CPU", 0) >= RAY_CPUS:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def pool2(ray_local):
    from runtime.pool import DevicePool, PoolConfig

    pool = DevicePool(PoolConfig(workers=2, device="cpu", group_timeout_s=60))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session")
def builtin_image_dir():
    from pipelines.builtin import resolve_model

    return resolve_model("builtin-image")


@pytest.fixture(autouse=True, scope="module")
def _ship_test_functions_by_value(request):
    """Ray workers cannot import test modules; send their functions to workers by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)
    yield
    cloudpickle.unregister_pickle_by_value(request.module)


def pytest_collection_modifyitems(config, items):
    """Modules with a test marked slow run first (each module's tests in their own order). `make test` spreads
    whole modules over two pytest-xdist workers in this order (`--no-loadscope-reorder`; xdist would otherwise
    start the modules with the most tests first), each taking the next module as it frees up; started last, a
    minute-long module would leave the other worker idle at the end. The order is the same in every worker
    process, as xdist requires."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
