"""`tessera render job=video` on a diffusers directory (`model=local model.name=DIR`), in this process on the
shared Ray cluster: the CLI's Hydra config reaches a video family's band plan with no field but `parallel=patch`
(configs/video.yaml turns the shared patch config's image-only `kv_source: input` into `kv`)."""

from __future__ import annotations

import json

import pytest
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo

from cluster.cli import main
from pipelines.video_writer import probe_mp4

pytestmark = pytest.mark.slow


def test_render_a_hunyuanvideo_directory_in_displaced_bands(ray_local, tmp_path, capsys):
    model = save_tiny_hunyuanvideo(tmp_path / "hunyuanvideo")
    out = tmp_path / "outs"
    overrides = ["job=video", "model=local", f"model.name={model}", "parallel=patch", "frames=16", "steps=3"]
    code = main(["render", "--state-dir", str(tmp_path / "state"), *overrides, "progress=false", f"output_dir={out}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    [job] = list(out.iterdir())
    assert probe_mp4(job / "video.mp4")["frames"] == 13  # 4 latent frames of its causal VAE: 1 + 3 x 4
    meta = json.loads((job / "metadata.json").read_text())
    parallel = meta["spec"]["parallel"]
    assert (parallel["strategy"], parallel["degree"], parallel["mode"], parallel["kv_source"]) == (
        "patch", 2, "displaced", "kv"
    )
    assert meta["spec"]["block_frames"] == 16 and len(meta["workers"]) == 2  # the whole video in bands on both
