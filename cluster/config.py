"""Hydra configs (configs/ at the repo root) turned into job specs and pool configs.

A job's config is configs/render.yaml (images) or, for ``job=video`` (or ``parallel=frames``),
configs/video.yaml; both compose the same ``model``, ``parallel`` and ``pool`` groups.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cluster.errors import SpecError
from cluster.jobs import parse_job
from cluster.jobs.spec import JobSpec
from runtime.pool import PoolConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
JOB_CONFIGS = {"image": "render", "video": "video"}
"""The Hydra config of each job kind."""


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def job_kind_of(overrides: list[str]) -> str:
    """The job kind the overrides ask for: ``job=video`` (or the video strategy ``parallel=frames``)."""
    kinds = [o.split("=", 1)[1] for o in overrides if o.startswith("job=")]
    if kinds:
        return kinds[-1]
    return "video" if "parallel=frames" in overrides else "image"


def compose_job(overrides: list[str]) -> DictConfig:
    """The composed config of the job the overrides describe (its kind's config file)."""
    kind = job_kind_of(overrides)
    if kind not in JOB_CONFIGS:
        raise SpecError("job", f"unknown job kind {kind!r}; expected one of {tuple(JOB_CONFIGS)}")
    return compose(JOB_CONFIGS[kind], [o for o in overrides if not o.startswith("job=")])


def spec_from_config(cfg: DictConfig) -> JobSpec:
    """The job spec of a composed config, validated (SpecError names a bad field)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    model = data.pop("model")
    for key in ("pool", "pools", "progress", "output_roots", "cache_recheck", "http"):  # the service's, not the job's
        data.pop(key, None)
    data["model"] = model["name"]
    data["dtype"] = model.get("dtype", "float32")
    return parse_job(data)


def pool_from_config(cfg: DictConfig) -> tuple[PoolConfig, str | None]:
    pool = OmegaConf.to_container(cfg.pool, resolve=True)
    address = pool.pop("address", None)
    return PoolConfig(**pool), address


def pools_from_config(cfg: DictConfig) -> list[PoolConfig]:
    """`pools`: several named pools for `tessera serve` (empty: the one `pool`)."""
    raw = cfg.get("pools")
    pools = OmegaConf.to_container(raw, resolve=True) if raw is not None else []
    if not isinstance(pools, list) or not all(isinstance(p, dict) for p in pools):
        raise ValueError(f"pools: expected a list of pool mappings, got {pools!r}")
    return [PoolConfig(**pool) for pool in pools]
