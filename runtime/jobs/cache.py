"""The step cache a render session puts on its denoiser: the job's ``cache`` mode, through the family."""

from __future__ import annotations

from typing import Any

from parallel.cache.config import CacheConfig
from parallel.cache.step_cache import StepCache
from pipelines.families import family_of
from pipelines.sampling import denoiser


def _first_block(model, config: CacheConfig) -> StepCache:
    from parallel.cache.first_block import apply_first_block_cache

    return apply_first_block_cache(model, config, first_step=0)


def _deepcache(model, config: CacheConfig) -> StepCache:
    from parallel.cache.deepcache import apply_deepcache

    return apply_deepcache(model, config, first_step=0)


def _taylorseer(model, config: CacheConfig) -> StepCache:
    from parallel.cache.taylorseer import apply_taylorseer

    return apply_taylorseer(config)


def _teacache(model, config: CacheConfig) -> StepCache:
    from parallel.cache.teacache import apply_teacache

    return apply_teacache(model, config, first_step=0)


def _block_cache(model, config: CacheConfig) -> StepCache:
    from parallel.cache.block_cache import apply_block_cache

    return apply_block_cache(model, config, first_step=0)


CACHES = {
    "first-block": _first_block,
    "deepcache": _deepcache,
    "block-cache": _block_cache,
    "taylorseer": _taylorseer,
    "teacache": _teacache,
}
"""Cache mode -> how it is attached to a denoiser. The schedule counts from the job's step 0 (not the segment's or
the resume's), so every placement of the job takes the same decisions; a segment's first step runs in full
because nothing is cached yet."""


def attach_step_cache(pipe: Any, config: CacheConfig | None) -> StepCache | None:
    """The cache the job asks for on the pipeline's denoiser; None for mode "none"."""
    if config is None or not config.enabled:
        return None
    model = denoiser(pipe)
    family_of(pipe).prepare_cache(model)
    return CACHES[config.mode](model, config)
