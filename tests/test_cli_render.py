"""`tessera render` end to end in a subprocess: Hydra overrides, a local Ray cluster, a PNG that opens."""

import json
import subprocess
import sys

import pytest
from PIL import Image

# The refusals check that no Ray cluster started; a cluster shared by earlier test modules is stopped first.
pytestmark = pytest.mark.usefixtures("ray_stopped")


def _tessera(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_patch_render_writes_png_and_metadata(tmp_path):
    """One subprocess run covers the whole path; the refusals below run the CLI in-process."""
    out = tmp_path / "outs"
    run = _tessera(
        "render",
        "model=builtin-image",
        "height=64",
        "width=96",
        "steps=3",
        "seed=4",
        "parallel=patch",
        "parallel.degree=2",
        "parallel.mode=displaced",
        "parallel.warmup_steps=1",
        f"output_dir={out}",
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
    assert meta["device"] == "cpu" and meta["backend"] == "gloo"
    assert set(meta["timings"]) >= {"load_s", "denoise_s", "decode_s", "total_s", "step_s"}
    assert meta["versions"]["torch"] and meta["versions"]["ray"] and meta["versions"]["diffusers"]
    assert (meta["strategy"], meta["degree"], meta["mode"], meta["warmup_steps"]) == ("patch", 2, "displaced", 1)
    assert [w["band"] for w in meta["workers"]] == [0, 1]
    assert all(w["bytes_sent_per_step"] > 0 and w["peak_memory_bytes"] > 0 for w in meta["workers"])
    assert "denoising" in run.stderr  # the progress bar


def _refused(capsys, *args) -> str:
    """Run `tessera render ...` in-process; it must refuse (exit 2) before starting Ray. Its stderr."""
    import ray

    from cluster.cli import main

    assert main(["render", *args]) == 2
    assert not ray.is_initialized()  # refused before any cluster started
    return capsys.readouterr().err


def test_cli_refuses_odd_cfg_degree_before_starting_workers(capsys):
    err = _refused(capsys, "parallel=patch", "parallel.degree=3", "parallel.cfg=true")
    assert "parallel.degree" in err and "even" in err


def test_cli_refuses_degree_larger_than_pool(capsys):
    err = _refused(capsys, "parallel=patch", "parallel.degree=3", "pool.workers=2")
    assert "parallel.degree" in err and "pool" in err


def test_cli_refuses_bad_field_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "outs"
    err = _refused(capsys, "height=100", f"output_dir={out}")
    assert "height" in err and "multiple of 8" in err
    assert not out.exists()


def test_cli_refuses_unknown_override(capsys):
    assert "heigth" in _refused(capsys, "heigth=64")


def test_cli_missing_model_directory(tmp_path, capsys):
    err = _refused(capsys, "model=local", f"model.name={tmp_path / 'nope'}")
    assert "model:" in err and "nope" in err


def test_submit_leaves_the_degree_check_to_the_served_controller():
    """`tessera serve pool.workers=8` serves 8 workers: `tessera submit parallel.degree=8` must not be
    refused against this command's own default pool (2 workers); `tessera render` runs on that pool."""
    from cluster.cli_jobs import _spec_and_pool
    from cluster.errors import SpecError

    overrides = ["parallel=patch", "parallel.degree=8", "height=1024", "width=64"]
    _, spec, _, _ = _spec_and_pool(overrides, embedded=False)
    assert spec.parallel.degree == 8
    with pytest.raises(SpecError, match="parallel.degree"):
        _spec_and_pool(overrides)


def test_cli_submit_refuses_a_bad_image_job_before_connecting(capsys):
    """`tessera submit` validates the image spec locally; no controller is needed to refuse it."""
    import ray

    from cluster.cli import main

    assert main(["submit", "steps=0"]) == 2
    assert "steps" in capsys.readouterr().err
    assert not ray.is_initialized()
