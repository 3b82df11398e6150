"""A per-worker cache of loaded models, so a second job on the same model does not reload it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelCache:
    entries: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    """Loaded objects keyed by (model path, dtype, device)."""
    hits: int = 0
    """Lookups served from the cache."""
    misses: int = 0
    """Lookups that loaded the model."""

    def get_or_load(self, path: str, dtype: str, device: str, load: Callable[[], Any]) -> tuple[Any, bool]:
        """The cached object for the key, loading it on a miss; returns (object, hit)."""
        key = (str(path), dtype, device)
        if key in self.entries:
            self.hits += 1
            return self.entries[key], True
        obj = load()
        self.entries[key] = obj
        self.misses += 1
        return obj, False

    def evict(self, path: str | None = None) -> int:
        """Drop the entries of one model path (all entries if None); returns how many."""
        keys = [k for k in self.entries if path is None or k[0] == str(path)]
        for key in keys:
            del self.entries[key]
        return len(keys)
