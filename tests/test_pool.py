"""A device pool of real Ray actors in a placement group: start, shape, stop."""

import pytest
import ray

from runtime import heap
from runtime.pool import DevicePool, PoolConfig, PoolError


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as environ:  # the worker process's own, as the kernel holds it
        pairs = [entry.split(b"=", 1) for entry in environ.read().split(b"\0") if b"=" in entry]
    return {k.decode(): v.decode() for k, v in pairs}


def test_pool_starts_workers_with_one_thread_each_and_its_environment(ray_local):
    env = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    with DevicePool(PoolConfig(workers=2, device="cpu", env=env)) as pool:
        assert all(_environ(info["pid"])["MALLOC_MMAP_THRESHOLD_"] == "131072" for info in pool.infos)
        assert pool.size == 2
        assert len({info["pid"] for info in pool.infos}) == 2
        assert all(info["torch_threads"] == 1 and info["device"] == "cpu" for info in pool.infos)
        assert all(info["node_ip"] for info in pool.infos)
        table = ray.util.placement_group_table(pool.placement_group)
        assert table["state"] == "CREATED"
        assert [b["CPU"] for b in table["bundles"].values()] == [1.0, 1.0]


def _huge_pages_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages:"))


def test_cpu_workers_start_with_mallocs_huge_pages_unless_the_pool_says_otherwise(ray_local, monkeypatch):
    """glibc reads GLIBC_TUNABLES once, at process start: the pool puts it in its CPU workers' environment."""
    monkeypatch.delenv(heap.TUNABLES_ENV, raising=False)  # a driver's own setting would be left as it is
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as mode:
        thp = "[never]" not in mode.read()
    with DevicePool(PoolConfig(workers=1, device="cpu")) as pool:
        pid = pool.infos[0]["pid"]
        assert _environ(pid)["GLIBC_TUNABLES"] == heap.HUGE_PAGES
        if thp:  # malloc's heap and mapped chunks do get huge pages
            assert _huge_pages_kb(pid) > 0
    with DevicePool(PoolConfig(workers=1, device="cpu", env={"GLIBC_TUNABLES": ""})) as pool:
        assert _environ(pool.infos[0]["pid"])["GLIBC_TUNABLES"] == ""  # the pool's own setting wins
    assert heap.worker_env("cuda", {"A": "1"}) == {"A": "1"}  # GPU workers' tensors are not malloc's


def test_pool_shutdown_kills_workers_and_frees_slots(ray_local):
    pool = DevicePool(PoolConfig(workers=3, device="cpu"))
    worker = pool.workers[0]
    pg_id = pool.placement_group.id
    pool.shutdown()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(worker.info.remote(), timeout=30)
    assert ray.util.placement_group_table()[pg_id.hex()]["state"] == "REMOVED"
    # the slots are free again: a pool using every CPU slot can start
    with DevicePool(PoolConfig(workers=4, device="cpu")) as full:
        assert full.size == 4


def test_pool_larger_than_cluster_is_refused(ray_local):
    with pytest.raises(PoolError, match="pool.workers"):
        DevicePool(PoolConfig(workers=5, device="cpu"))


def test_a_malformed_environment_is_refused_before_any_worker_starts():
    with pytest.raises(ValueError, match="pool.env"):
        DevicePool(PoolConfig(workers=1, device="cpu", env={"A=B": "1"}))
    with pytest.raises(ValueError, match="pool.env: TESSERA_MMAP_THRESHOLD='64M'"):
        DevicePool(PoolConfig(workers=1, device="cpu", env={"TESSERA_MMAP_THRESHOLD": "64M"}))
    with pytest.raises(ValueError, match="pool.env: TESSERA_MMAP_THRESHOLD"):
        DevicePool(PoolConfig(workers=1, device="cpu", env={"TESSERA_MMAP_THRESHOLD": str(64 * 2**20)}))


def test_cuda_pool_without_gpus_is_refused(ray_local):
    with pytest.raises(ValueError, match="device"):
        DevicePool(PoolConfig(workers=1, device="cuda"))
