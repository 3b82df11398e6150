"""Driver side of a job's process group: form it over some pool workers, tear it down after."""

from __future__ import annotations

import ray

from runtime.process_group import GroupSpec


class GroupFormationError(RuntimeError):
    """The workers could not rendezvous into one process group in time."""


class JobGroup:
    """A torch.distributed group over `workers` (Ray actor handles); rank i is workers[i]."""

    def __init__(self, workers: list, backend: str, timeout_s: float = 60.0) -> None:
        if not workers:
            raise ValueError("a process group needs at least one worker")
        self.workers = list(workers)
        master = ray.get(workers[0].info.remote())
        self.spec = GroupSpec(
            master_addr=master["node_ip"],
            master_port=ray.get(workers[0].free_port.remote()),
            world_size=len(workers),
            backend=backend,
            timeout_s=timeout_s,
        )
        joins = [w.join_group.remote(self.spec, rank) for rank, w in enumerate(workers)]
        try:
            ray.get(joins, timeout=timeout_s + 30)
        except Exception as err:
            self.close()
            raise GroupFormationError(
                f"{len(workers)} workers failed to form a {backend} group at "
                f"{self.spec.master_addr}:{self.spec.master_port}: {err}"
            ) from err

    @property
    def size(self) -> int:
        return len(self.workers)

    def close(self) -> None:
        """Destroy the group on every worker that is still alive."""
        refs = [w.leave_group.remote() for w in self.workers]
        for ref in refs:
            try:
                ray.get(ref, timeout=30)
            except Exception:  # a dead worker has no group left to destroy
                pass

    def __enter__(self) -> JobGroup:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, ray.exceptions.RayActorError):
            return  # a member died: its peers may be stuck in a collective; the pool replaces them all
        self.close()
