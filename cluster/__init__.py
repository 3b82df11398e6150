"""The service: job kinds and their specs, controller, job store, scheduler, segment runner, Python client, CLI.

``from cluster import Client`` works; each public name is imported on first use (PEP 562), so
``import cluster`` and the light CLI verbs (``tessera list/status/logs/wait/cancel``) load neither
torch nor diffusers.
"""

import importlib

# Where each public name lives.
_EXPORTS = {
    "Client": "cluster.client",
    "Job": "cluster.client",
    "JobFailed": "cluster.client",
    "RenderSpec": "cluster.jobs.image",
    "SpecError": "cluster.errors",
    "VideoSpec": "cluster.jobs.video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cluster' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
