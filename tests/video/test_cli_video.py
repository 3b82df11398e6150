"""`tessera render job=video`: bad jobs refused before any worker starts; the image default unchanged.

In-process calls of the CLI's `main` (the end-to-end subprocess run is test_cli_video_render.py).
"""

from __future__ import annotations

import pytest
import ray

from cluster.cli import main

pytestmark = pytest.mark.usefixtures("ray_stopped")


def test_cli_video_refuses_bad_jobs_before_starting_workers(tmp_path, capsys):
    out = tmp_path / "outs"
    assert main(["render", "job=video", "frames=16", "parallel.degree=3", f"output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert "parallel.degree" in err and "frame blocks" in err
    assert main(["render", "job=video", "model.name=nope"]) == 2
    err = capsys.readouterr().err
    assert "model:" in err and "nope" in err
    assert main(["render", "parallel=frames", "parallel.degree=3", "pool.workers=2", "frames=64"]) == 2
    assert "pool's 2 workers" in capsys.readouterr().err
    assert not ray.is_initialized() and not out.exists()


def test_cli_video_cfg_and_image_default_unchanged(capsys):
    assert main(["render", "job=video", "--cfg"]) == 0
    video = capsys.readouterr().out
    assert "block_frames: 8" in video and "builtin-video" in video and "strategy: frames" in video
    assert main(["render", "--cfg"]) == 0
    image = capsys.readouterr().out
    assert "builtin-image" in image and "frames" not in image and "strategy: patch" in image


def test_cli_submit_video_refuses_bad_jobs_before_connecting(capsys):
    """`tessera submit job=video` validates with the video config; no controller is needed to refuse."""
    assert main(["submit", "job=video", "block_frames=0"]) == 2
    assert "block_frames" in capsys.readouterr().err
    assert main(["submit", "job=video", "parallel.degree=many"]) == 2
    assert "parallel.degree" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_parallel_none_composes_for_a_video_job():
    """configs/video.yaml's own example (`parallel=none pool.workers=1`) builds a one-worker video spec."""
    from cluster.cli_jobs import _spec_and_pool

    _, spec, pool, _ = _spec_and_pool(["job=video", "parallel=none", "pool.workers=1", "frames=32"])
    assert (spec.kind, spec.parallel.strategy, spec.parallel.degree, pool.workers) == ("video", "none", 1, 1)


def test_whole_video_strategies_compose_for_a_video_job():
    """The shared `parallel=sequence` and `parallel=patch` configs build video specs (the image fields they carry
    at their defaults); a video's bands exchange K/V: video.yaml sets `kv_source: kv` over patch.yaml's `input`, and
    `input` asked for on the command line is refused by name."""
    from cluster.cli_jobs import _spec_and_pool
    from cluster.errors import SpecError

    base = ["job=video", "frames=8", "height=32", "width=32"]
    _, spec, _, _ = _spec_and_pool([*base, "parallel=sequence"])
    assert (spec.parallel.strategy, spec.parallel.degree, spec.blocks) == ("sequence", 2, 1)
    _, spec, _, _ = _spec_and_pool([*base, "parallel=patch"])
    assert (spec.parallel.strategy, spec.parallel.mode, spec.blocks) == ("patch", "displaced", 1)
    assert spec.parallel.kv_source == "kv"
    with pytest.raises(SpecError) as err:
        _spec_and_pool([*base, "parallel=patch", "parallel.kv_source=input"])
    assert err.value.field == "parallel.kv_source"
    _, spec, _, _ = _spec_and_pool([*base, "parallel=frames", "parallel.strategy=auto", "parallel.degree=auto"])
    assert (spec.parallel.strategy, spec.parallel.degree) == ("auto", "auto")


def test_a_guidance_branch_split_of_the_frame_pipeline_composes():
    """`parallel=frames parallel.cfg=true` (configs/parallel/frames.yaml carries the field): a branch per worker on
    2 workers, a pipeline of 2 stages per branch on 4; without guidance it is refused by name."""
    from cluster.cli_jobs import _spec_and_pool
    from cluster.errors import SpecError

    base = ["job=video", "frames=32", "guidance_scale=3", "parallel=frames", "parallel.cfg=true"]
    for degree, stages in ((2, 1), (4, 2)):
        _, spec, pool, _ = _spec_and_pool([*base, f"parallel.degree={degree}", f"pool.workers={degree}"])
        assert (spec.parallel.strategy, spec.parallel.cfg, spec.parallel.split_degree) == ("frames", True, stages)
    with pytest.raises(SpecError) as err:
        _spec_and_pool([*base, "guidance_scale=1", "parallel.degree=2"])
    assert err.value.field == "parallel.cfg"
