"""`tessera render job=video`: bad jobs refused before any worker starts; the image default unchanged."""

from __future__ import annotations

import subprocess
import sys


def _tessera(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_video_refuses_bad_jobs_before_starting_workers(tmp_path):
    out = tmp_path / "outs"
    run = _tessera("render", "job=video", "frames=16", "parallel.degree=3", f"output_dir={out}", cwd=tmp_path)
    assert run.returncode == 2 and "parallel.degree" in run.stderr and "frame blocks" in run.stderr
    run = _tessera("render", "job=video", "model.name=nope", cwd=tmp_path)
    assert run.returncode == 2 and "model:" in run.stderr and "nope" in run.stderr
    assert "Ray" not in run.stderr and not out.exists()


def test_cli_video_cfg_and_image_default_unchanged(tmp_path):
    video = _tessera("render", "job=video", "--cfg", cwd=tmp_path)
    assert video.returncode == 0 and "block_frames: 8" in video.stdout and "builtin-video" in video.stdout
    image = _tessera("render", "--cfg", cwd=tmp_path)
    assert image.returncode == 0 and "builtin-image" in image.stdout and "frames" not in image.stdout
