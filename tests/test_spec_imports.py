"""Validating a job (what `tessera submit` does before it contacts the service) loads no model code.

A fresh interpreter builds and validates an image and a video spec of the built-in models; diffusers and the
parallel strategies (which import diffusers' models) must stay unloaded, so submitting stays quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_building_specs_loads_neither_diffusers_nor_the_strategies():
    code = (
        "import sys, json\n"
        "from cluster.jobs.image import RenderSpec\n"
        "from cluster.jobs.video import VideoSpec\n"
        "RenderSpec.from_dict({'prompt': 'x', 'height': 256, 'width': 256, 'sampler': 'euler'})\n"
        "VideoSpec.from_dict({'prompt': 'x', 'frames': 16})\n"
        "watched = ('diffusers', 'transformers', 'parallel.patch.parallelize', 'pipelines.families.wan.patch', 'parallel.patch.cfg')\n"
        "print(json.dumps(sorted(m for m in watched if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_parallel_names_still_resolve_on_first_use():
    import parallel

    assert parallel.band_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert parallel.PatchConfig.__name__ == "PatchConfig"
    assert callable(parallel.parallelize_patch) and callable(parallel.combine_cfg)
    assert all(hasattr(parallel, name) for name in parallel.__all__)
