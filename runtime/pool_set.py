"""Several device pools as one: a farm's GPUs of two kinds, or a GPU pool beside a CPU pool.

Workers are numbered across the pools (pool 0's first, then pool 1's, ...), so the scheduler's book
and the coordinator see one list of workers, as with a single DevicePool. A job's workers always
come from one pool: a process group needs one backend and one kind of device. A job picks pools
with its `device` field: "" (any), a pool's name, or a device kind ("cpu", "cuda").
"""

from __future__ import annotations

from runtime.job_group import JobGroup
from runtime.pool import DevicePool, PoolConfig


class PoolSet:
    def __init__(self, configs: list[PoolConfig], owner: str = "") -> None:
        """``owner``: a name for this set's placement groups (``<owner>:<pool name>``), so that the next owner of
        that name (a controller replacing a dead one) can free the devices a dead one left reserved."""
        if not configs:
            raise ValueError("pools: at least one pool is needed")
        names = [c.name for c in configs]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ValueError(f"pools: the name {duplicate!r} is used twice; pool names must differ")
        self.pools: list[DevicePool] = []
        try:
            for config in configs:
                self.pools.append(DevicePool(config, f"{owner}:{config.name}" if owner else ""))
        except BaseException:
            self.shutdown()
            raise
        self._owner: list[tuple[int, int]] = [
            (p, local) for p, pool in enumerate(self.pools) for local in range(pool.size)
        ]

    # --- what the coordinator uses (the DevicePool interface, over global indices) ---------------
    @property
    def size(self) -> int:
        return len(self._owner)

    @property
    def workers(self) -> list:
        return [pool.workers[local] for pool, local in self._locate(range(self.size))]

    @property
    def infos(self) -> list[dict]:
        return [
            {**pool.infos[local], "pool": pool.config.name, "pool_index": local}
            for pool, local in self._locate(range(self.size))
        ]

    def group(self, indices: list[int] | None = None) -> JobGroup:
        """A fresh process group over workers of one pool."""
        indices = list(range(self.size)) if indices is None else indices
        pool = self.pool_of(indices)
        return pool.group([local for _, local in self._locate(indices)])

    def unhealthy_workers(self, indices: list[int], timeout_s: float = 10.0) -> list[int]:
        return [i for i in indices if self._one(i)[0].unhealthy_workers([self._one(i)[1]], timeout_s)]

    def restart_workers(self, indices: list[int]) -> None:
        for p, pool in enumerate(self.pools):
            local = [self._owner[i][1] for i in indices if self._owner[i][0] == p]
            if local:
                pool.restart_workers(local)

    def shutdown(self) -> None:
        for pool in self.pools:
            pool.shutdown()

    # --- what the scheduler uses -----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [pool.config.name for pool in self.pools]

    def kind(self, name: str) -> str:
        return self._named(name).slot.kind

    def indices(self, name: str) -> list[int]:
        """The global indices of one pool's workers."""
        p = self.names.index(name)
        return [i for i, (owner, _) in enumerate(self._owner) if owner == p]

    def matching(self, device: str) -> list[str]:
        """Names of the pools a job's `device` request allows: "" every pool, else the pool of that
        name, else every pool of that device kind."""
        if not device:
            return self.names
        if device in self.names:
            return [device]
        return [name for name in self.names if self.kind(name) == device]

    def pool_of(self, indices: list[int]) -> DevicePool:
        owners = {self._owner[i][0] for i in indices}
        if len(owners) != 1:
            raise ValueError(f"workers {indices} span pools {sorted(self.names[o] for o in owners)}; a job runs in one")
        return self.pools[owners.pop()]

    def describe(self) -> list[dict]:
        return [
            {"name": pool.config.name, "device": pool.slot.kind, "workers": self.indices(pool.config.name)}
            for pool in self.pools
        ]

    # --- helpers ------------------------------------------------------------------------------------
    def _one(self, index: int) -> tuple[DevicePool, int]:
        p, local = self._owner[index]
        return self.pools[p], local

    def _locate(self, indices) -> list[tuple[DevicePool, int]]:
        return [self._one(i) for i in indices]

    def _named(self, name: str) -> DevicePool:
        return self.pools[self.names.index(name)]

    def __enter__(self) -> PoolSet:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
