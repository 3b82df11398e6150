"""Connect to Ray: an existing cluster by address, or a local one started (and stopped) for us."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import ray


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[dict]:
    """Yield the cluster's resources. `address=None` starts a local cluster and shuts it down after.

    If Ray is already initialised in this process (a test fixture, a notebook), it is used as is
    and left running.
    """
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    if address is None:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
