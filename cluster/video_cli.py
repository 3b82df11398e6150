"""`tessera render job=video ...`: compose configs/video.yaml with the overrides, validate, render.

A bad field is refused with its name before any worker starts (exit code 2).
"""

from __future__ import annotations

import json
import sys

from cluster.spec import SpecError


def is_video_render(overrides: list[str]) -> bool:
    """A render is a video render when the overrides say job=video or parallel=frames."""
    return "job=video" in overrides or "parallel=frames" in overrides


def video_spec_and_pool(overrides: list[str]):
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
    spec.check_fits(pool_config.workers)
    return cfg, spec, pool_config, address, progress


def render_video(overrides: list[str], print_cfg: bool = False) -> int:
    from omegaconf import OmegaConf

    from cluster.video_job import run_video_job

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
    directory = run_video_job(spec, pool, address, progress=bool(progress))
    print(f"wrote {directory / 'video.mp4'}")
    print(json.dumps({"job_id": directory.name, "directory": str(directory)}))
    return 0
