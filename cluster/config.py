"""Hydra configs (configs/ at the repo root) turned into job specs and pool configs."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cluster.spec import RenderSpec
from runtime.pool import PoolConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


def render_spec_from_config(cfg: DictConfig) -> RenderSpec:
    data = OmegaConf.to_container(cfg, resolve=True)
    model = data.pop("model")
    data.pop("pool", None)
    data.pop("pools", None)
    data.pop("progress", None)
    data["model"] = model["name"]
    data["dtype"] = model.get("dtype", "float32")
    return RenderSpec.from_dict(data)


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
