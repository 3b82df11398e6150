"""Make the repo root and the parallel and video tests' helpers (real gloo process runner, tiny models)
importable."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if importlib.util.find_spec("parallel") is None:  # repo not installed
    sys.path.insert(0, str(ROOT))
for helpers in (ROOT / "tests" / "parallel", ROOT / "tests" / "video", Path(__file__).resolve().parent):
    if str(helpers) not in sys.path:
        sys.path.insert(0, str(helpers))
