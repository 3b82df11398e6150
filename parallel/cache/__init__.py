"""Step caching: reusing work across denoising steps, the same decision on every worker of a job.

Plain functions over a module and (optionally) a process group, without Ray. ``config`` holds the knobs,
``schedule`` the decisions, ``first_block`` the transformers' cache (diffusers' First Block Cache hooks with a
decision reduced over the group), ``deepcache`` the UNets' (reused deep features).
"""

from parallel.cache.config import MODES, CacheConfig

__all__ = ["MODES", "CacheConfig"]
