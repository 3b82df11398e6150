"""Per-job gloo process groups over real Ray workers: collectives, point-to-point, re-forming, timeouts."""

import time

import pytest
import ray
import torch

from runtime.process_group import GroupSpec


def _all_gather_ranks(worker):
    import torch.distributed as dist

    mine = torch.tensor([10.0 * worker.rank + worker.index])
    out = [torch.zeros(1) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return [t.item() for t in out]


def _send_recv(worker):
    import torch.distributed as dist

    if worker.rank == 0:
        dist.send(torch.arange(4, dtype=torch.float32) * 3, dst=1)
        return None
    buffer = torch.zeros(4)
    dist.recv(buffer, src=0)
    return buffer.tolist()


def _group_shape(worker):
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size(), dist.get_backend())


def test_two_workers_all_gather(pool2):
    with pool2.group() as group:
        assert group.spec.backend == "gloo"
        assert group.spec.master_addr == pool2.infos[0]["node_ip"]
        results = ray.get([w.execute.remote(_all_gather_ranks) for w in pool2.workers])
    assert results == [[0.0, 11.0], [0.0, 11.0]]


def test_two_workers_send_recv(pool2):
    with pool2.group():
        results = ray.get([w.execute.remote(_send_recv) for w in pool2.workers])
    assert results[1] == [0.0, 3.0, 6.0, 9.0]


def test_group_is_reformed_for_the_next_job(pool2):
    with pool2.group():
        assert ray.get([w.execute.remote(_group_shape) for w in pool2.workers]) == [
            (0, 2, "gloo"),
            (1, 2, "gloo"),
        ]
    # the old group is gone: a one-worker job, then the two workers in the other rank order
    with pool2.group([1]):
        assert ray.get(pool2.workers[1].execute.remote(_group_shape)) == (0, 1, "gloo")
    with pool2.group([1, 0]):
        shapes = ray.get([w.execute.remote(_group_shape) for w in pool2.workers])
        assert shapes == [(1, 2, "gloo"), (0, 2, "gloo")]
        gathered = ray.get([w.execute.remote(_all_gather_ranks) for w in pool2.workers])
        assert gathered[0] == [1.0, 10.0]
    assert ray.get([w.leave_group.remote() for w in pool2.workers]) == [False, False]


def test_missing_peer_times_out_instead_of_hanging(pool2):
    worker = pool2.workers[0]
    addr = pool2.infos[0]["node_ip"]
    port = ray.get(worker.free_port.remote())
    spec = GroupSpec(addr, port, world_size=2, backend="gloo", timeout_s=3)
    started = time.monotonic()
    with pytest.raises(ray.exceptions.RayTaskError):
        ray.get(worker.join_group.remote(spec, 0), timeout=60)
    assert time.monotonic() - started < 45
    ray.get(worker.leave_group.remote())
    with pool2.group():  # the worker is usable again
        assert ray.get(worker.execute.remote(_group_shape))[1] == 2
