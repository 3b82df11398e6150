"""`tessera train model=builtin-video` on real Ray Train workers with real DeepSpeed pipelines over gloo.

A 1-worker 1-stage run and a 2-worker 2-stage run of the built-in video DiT (tiny clips, few steps) give the
same losses; the 2-stage run's last checkpoint loads into the video render path and renders.
"""

from __future__ import annotations

import pytest
import torch
from _local_training import run_one_worker_training

from cluster.train import run_training
from runtime.training.checkpoint import checkpoint_name
from runtime.training.config import DitStage, TrainConfig

pytestmark = pytest.mark.slow

STEPS = 3


def _config(run_dir, workers: int, stages: int) -> TrainConfig:
    return TrainConfig(
        model="builtin-video",
        workers=workers,
        stages=stages,
        device="cpu",
        seed=5,
        run_dir=str(run_dir),
        checkpoint_every=STEPS,
        progress=False,
        dit=DitStage(
            steps=STEPS,
            micro_batch=2,
            micro_batches=3,
            resolution=32,
            frames=3,
            cache_size=6,
            warmup_steps=1,
            lr=2e-3,
            # DeepSpeed takes the clipping norm per pipeline stage; parity holds with clipping off.
            gradient_clipping=0.0,
        ),
    )


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("train-video")
    one = run_one_worker_training(_config(root / "one", workers=1, stages=1))  # the same worker, no Ray Train
    two = run_training(_config(root / "two", workers=2, stages=2))
    return {"root": root, "one": one, "two": two}


def test_two_stage_video_pipeline_matches_one_stage_losses(runs):
    one = [r["loss"] for r in runs["one"] if r["phase"] == "dit"]
    two = [r["loss"] for r in runs["two"] if r["phase"] == "dit"]
    assert len(one) == len(two) == STEPS
    assert len({round(x, 6) for x in one}) == STEPS  # the model trains: losses move
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-4)


def test_checkpoint_holds_both_stages_weights_and_renders(runs, tmp_path):
    from cluster.jobs.video import VideoSpec
    from pipelines.builtin.video import build_video_transformer
    from pipelines.families.wan.loading import load_video_pipeline
    from runtime.jobs.video_session import VideoSession

    directory = runs["root"] / "two" / "checkpoints" / checkpoint_name("dit", STEPS) / "pipeline"
    pipe = load_video_pipeline(directory)
    initial = build_video_transformer(seed=5).state_dict()
    trained = pipe.transformer.state_dict()
    for name in ("patch_embedding.weight", "blocks.0.attn1.to_q.weight", "proj_out.weight"):
        assert (trained[name] - initial[name]).abs().max() > 1e-4, name  # first and last stage both moved
    task = VideoSpec(
        model=str(directory),
        dtype="float32",
        prompt="a red circle on a blue background",
        height=32,
        width=32,
        frames=4,
        block_frames=2,
        context_frames=1,
        steps=2,
        seed=0,
        fps=4.0,
    )
    session = VideoSession(pipe, task, group=None, video_path=str(tmp_path / "video.mp4"))
    session.advance()
    assert session.finish()["blocks_finished"] == [0, 1]
