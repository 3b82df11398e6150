"""Shared fixtures: a real local Ray cluster per test module, the built-in model's directory."""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray cluster with 4 logical CPU slots (oversubscribing 2 cores is fine for tiny models)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # address="local": a cluster of our own, even while another `ray start` cluster runs on this machine
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def pool2(ray_local):
    from runtime.pool import DevicePool, PoolConfig

    pool = DevicePool(PoolConfig(workers=2, device="cpu", group_timeout_s=60))
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session")
def builtin_image_dir():
    from pipelines.registry import resolve_model

    return resolve_model("builtin-image")


@pytest.fixture(autouse=True, scope="module")
def _ship_test_functions_by_value(request):
    """Ray workers cannot import test modules; send their functions to workers by value."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)
    yield
    cloudpickle.unregister_pickle_by_value(request.module)
