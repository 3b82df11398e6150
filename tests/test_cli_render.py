"""`tessera render` end to end in a subprocess: Hydra overrides, a local Ray cluster, a PNG that opens."""

import json
import subprocess
import sys

from PIL import Image


def _tessera(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_render_writes_png_and_metadata(tmp_path):
    out = tmp_path / "outs"
    run = _tessera(
        "render",
        "model=builtin-image",
        "height=64",
        "width=96",
        "steps=3",
        "seed=4",
        f"output_dir={out}",
        "parallel=none",
        "pool.workers=1",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [job] = list(out.iterdir())
    with Image.open(job / "image.png") as png:
        png.load()
        assert png.size == (96, 64)
    meta = json.loads((job / "metadata.json").read_text())
    assert meta["job_id"] == job.name
    assert meta["spec"]["steps"] == 3 and meta["seed"] == 4
    assert meta["device"] == "cpu" and meta["backend"] is None  # one worker: no process group
    assert set(meta["timings"]) >= {"load_s", "denoise_s", "decode_s", "total_s", "step_s"}
    assert meta["versions"]["torch"] and meta["versions"]["ray"] and meta["versions"]["diffusers"]
    assert "denoising" in run.stderr  # the progress bar


def test_cli_patch_render_records_strategy(tmp_path):
    out = tmp_path / "outs"
    run = _tessera(
        "render",
        "height=64",
        "width=64",
        "steps=3",
        "parallel=patch",
        "parallel.degree=2",
        "parallel.mode=displaced",
        "parallel.warmup_steps=1",
        f"output_dir={out}",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [job] = list(out.iterdir())
    meta = json.loads((job / "metadata.json").read_text())
    assert (meta["strategy"], meta["degree"], meta["mode"], meta["warmup_steps"]) == (
        "patch",
        2,
        "displaced",
        1,
    )
    assert [w["band"] for w in meta["workers"]] == [0, 1]
    assert all(w["bytes_sent_per_step"] > 0 and w["peak_memory_bytes"] > 0 for w in meta["workers"])


def test_cli_refuses_odd_cfg_degree_before_starting_workers(tmp_path):
    run = _tessera("render", "parallel=patch", "parallel.degree=3", "parallel.cfg=true", cwd=tmp_path)
    assert run.returncode == 2
    assert "parallel.degree" in run.stderr and "even" in run.stderr
    assert "Ray" not in run.stderr  # refused before any cluster started


def test_cli_refuses_degree_larger_than_pool(tmp_path):
    run = _tessera("render", "parallel=patch", "parallel.degree=3", "pool.workers=2", cwd=tmp_path)
    assert run.returncode == 2 and "parallel.degree" in run.stderr and "pool" in run.stderr


def test_cli_refuses_bad_field_and_writes_nothing(tmp_path):
    out = tmp_path / "outs"
    run = _tessera("render", "height=100", f"output_dir={out}", cwd=tmp_path)
    assert run.returncode == 2
    assert "height" in run.stderr and "multiple of 8" in run.stderr
    assert not out.exists()


def test_cli_refuses_unknown_override(tmp_path):
    run = _tessera("render", "heigth=64", cwd=tmp_path)
    assert run.returncode == 2 and "heigth" in run.stderr


def test_cli_missing_model_directory(tmp_path):
    run = _tessera("render", "model=local", f"model.name={tmp_path / 'nope'}", cwd=tmp_path)
    assert run.returncode == 2
    assert "model:" in run.stderr and "nope" in run.stderr
