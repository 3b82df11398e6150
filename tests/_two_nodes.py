"""Two Ray nodes on this machine (two raylets, `ray.cluster_utils.Cluster`), with this process joined to them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from ray.cluster_utils import Cluster


@contextmanager
def two_ray_nodes(head_cpus: int, head_resources: dict, node_cpus: int, node_resources: dict) -> Iterator[Cluster]:
    """A head node and one more, each with its CPU slots and custom resources (the labels tests place by)."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "resources": head_resources})
    cluster.add_node(num_cpus=node_cpus, resources=node_resources)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
