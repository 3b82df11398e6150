"""A process group whose workers sit on two different Ray nodes (two raylets on this machine)."""

import pytest
import ray
from _two_nodes import two_ray_nodes

from runtime.pool import DevicePool, PoolConfig


@pytest.fixture(scope="module")
def two_node_cluster():
    with two_ray_nodes(1, {"node_a": 1}, 1, {"node_b": 1}) as cluster:
        yield cluster


def _sum_of_ranks_and_node(worker):
    import torch
    import torch.distributed as dist

    value = torch.tensor([float(worker.rank + 1)])
    dist.all_reduce(value)
    return value.item(), ray.get_runtime_context().get_node_id()


def test_group_spans_two_ray_nodes(two_node_cluster):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    with DevicePool(
        PoolConfig(workers=2, device="cpu", placement="STRICT_SPREAD", group_timeout_s=60)
    ) as pool:
        assert pool.infos[0]["node_id"] != pool.infos[1]["node_id"]
        with pool.group() as group:
            assert group.spec.master_addr == pool.infos[0]["node_ip"]
            results = ray.get([w.execute.remote(_sum_of_ranks_and_node) for w in pool.workers])
    assert [r[0] for r in results] == [3.0, 3.0]
    assert results[0][1] != results[1][1]
