"""`render(spec)`: validate, bring up Ray and a device pool, run the render, write its outputs."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.coordinator import run_render
from cluster.outputs import job_directory, write_image_job
from cluster.spec import RenderSpec
from cluster.versions import package_versions
from runtime.pool import DevicePool, PoolConfig
from runtime.ray_session import ray_session


@dataclass
class RenderOutput:
    job_id: str
    """Identifier, also the output folder's name."""
    directory: Path
    """outputs/<job-id>/ holding image.png and metadata.json."""
    metadata: dict
    """What metadata.json holds."""


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


def render(
    spec: RenderSpec | dict[str, Any],
    pool: PoolConfig | None = None,
    address: str | None = None,
    progress: bool = True,
) -> RenderOutput:
    """Render one image. `address=None` starts a local Ray cluster for the call (or uses the running one)."""
    spec = spec if isinstance(spec, RenderSpec) else RenderSpec.from_dict(spec)
    spec.validate()
    pool = pool or PoolConfig()
    spec.check_fits(pool.workers)
    job_id = new_job_id()
    job_directory(spec.output_dir, job_id)
    with ray_session(address, num_cpus=pool.workers if address is None else None):
        with DevicePool(pool) as device_pool:
            result = run_render(device_pool, spec, progress=progress)
    metadata = {
        "job_id": job_id,
        "spec": spec.to_dict(),
        "seed": spec.seed,
        "model_path": spec.model_path(),
        "device": device_pool.slot.kind,
        "versions": package_versions(),
        **result.metadata,
    }
    directory = write_image_job(spec.output_dir, job_id, result.image, metadata)
    return RenderOutput(job_id, directory, metadata)
