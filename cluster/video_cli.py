"""`tessera render job=video ...` and `tessera submit job=video ...`: compose configs/video.yaml with
the overrides and validate; render submits the job to the controller and waits, like image renders.

A bad field is refused with its name before any worker starts (exit code 2).
"""

from __future__ import annotations

import json
import sys

from cluster.spec import SpecError


def is_video_render(overrides: list[str]) -> bool:
    """A render is a video render when the overrides say job=video or parallel=frames."""
    return "job=video" in overrides or "parallel=frames" in overrides


def video_spec_and_pool(overrides: list[str], embedded: bool = True):
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from cluster.config import compose
    from cluster.video_spec import VideoSpec
    from runtime.pool import PoolConfig

    try:
        cfg = compose("video", [o for o in overrides if o != "job=video"])
    except (HydraException, OmegaConfBaseException) as err:
        raise SpecError("overrides", f"bad override: {err}") from err
    data = OmegaConf.to_container(cfg, resolve=True)
    model, pool = data.pop("model"), data.pop("pool")
    progress = data.pop("progress", True)
    data.pop("job", None)
    data["model"], data["dtype"] = model["name"], model.get("dtype", "float32")
    address = pool.pop("address", None)
    try:
        spec = VideoSpec.from_dict(data)
        pool_config = PoolConfig(**pool)
    except TypeError as err:
        raise SpecError("config", str(err)) from err
    if embedded and address is None:  # a served controller checks against its own pools
        spec.check_fits(pool_config.workers)
    return cfg, spec, pool_config, address, progress


def render_video(overrides: list[str], print_cfg: bool = False, state_dir: str = ".tessera") -> int:
    """Submit one video job to the embedded (or given) cluster's controller and wait for it."""
    from omegaconf import OmegaConf

    from cluster.client import Client

    try:
        cfg, spec, pool, address, progress = video_spec_and_pool(overrides)
    except SpecError as err:
        print(f"tessera: invalid job: {err}", file=sys.stderr)
        return 2
    if print_cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    for note in spec.notes:
        print(f"tessera: note: {note}", file=sys.stderr)
    with Client(address=address, state_dir=state_dir, pool=pool) as client:
        job = client.submit(spec)
        record = job.wait(progress=bool(progress))
        if record["state"] != "succeeded":
            print(f"tessera: job {job.id} {record['state']}: {record.get('error')}", file=sys.stderr)
            print(job.logs(), file=sys.stderr)
            return 1
        outputs = record["outputs"]
    print(f"wrote {outputs['video']}")
    print(json.dumps({"job_id": job.id, "directory": outputs["directory"]}))
    return 0
