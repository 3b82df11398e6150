"""`tessera render job=video` end to end in a subprocess: Hydra overrides, a local Ray pool, an MP4."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipelines.video_writer import probe_mp4
from runtime import heap


def _tessera(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_video_render_writes_mp4_and_metadata(tmp_path):
    out = tmp_path / "outs"
    run = _tessera(
        "render",
        "job=video",
        "frames=10",
        "block_frames=4",
        "steps=3",
        "height=32",
        "width=48",
        "fps=5",
        "parallel=frames",
        "parallel.degree=2",
        f"output_dir={out}",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rendering 12 frames" in run.stderr  # rounded up to whole blocks, and said so
    [job] = list(out.iterdir())
    assert sorted(p.name for p in job.iterdir()) == ["metadata.json", "video.mp4"]
    assert probe_mp4(job / "video.mp4") == {"frames": 12, "height": 32, "width": 48, "fps": 5.0}
    meta = json.loads((job / "metadata.json").read_text())
    assert (meta["frames"], meta["blocks"], meta["stages"], meta["strategy"]) == (12, 3, 2, "frames")
    assert meta["job_id"] == job.name and meta["device"] == "cpu" and meta["frames_per_s"] > 0
    assert [w["stage"] for w in meta["workers"]] == [0, 1]
    assert all(w["peak_memory_bytes"] > 0 and w["torch_threads"] == 1 for w in meta["workers"])
    assert meta["workers"][0]["layers"][0] == 0 and meta["workers"][1]["layers"][1] == 6
    if heap.glibc_available():  # CPU workers fix glibc's mmap threshold, and trim once per block decoded or written
        shares = meta["decode_shares"]
        assert all(w["mmap_threshold"] == heap.MMAP_THRESHOLD and w["minor_faults"] > 0 for w in meta["workers"])
        assert [w["heap_trims"] for w in meta["workers"]] == [3, 3 if shares[1] else 0], shares
