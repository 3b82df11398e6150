"""Make the video test helpers and the parallel tests' process launcher importable (also in children)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "parallel"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
if importlib.util.find_spec("parallel") is None:  # repo not installed: make the root importable
    sys.path.insert(0, str(HERE.parents[1]))
