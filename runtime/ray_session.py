"""Connect to Ray: an existing cluster by address, or a local one started (and stopped) for us."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

DEFAULT_TOKEN = Path.home() / ".ray" / "auth_token"


def join_cluster(address: str, **init_kwargs) -> None:
    """ray.init(address=...) that also works with Ray's token auth on explicit addresses.

    Ray 2.59+ enables token auth on local clusters and keeps the token in ~/.ray/auth_token, but only
    infers token mode for address="auto"; joining by an explicit address needs RAY_AUTH_MODE=token.
    """
    if "RAY_AUTH_MODE" not in os.environ and DEFAULT_TOKEN.is_file():
        try:  # Ray's own inference for "auto"; it also refreshes Ray's cached config
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )

            maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        except ImportError:  # another Ray version: the variable alone, read when Ray first configures
            os.environ["RAY_AUTH_MODE"] = "token"
    ray.init(address=address, logging_level=logging.WARNING, **init_kwargs)


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
        join_cluster(address)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
