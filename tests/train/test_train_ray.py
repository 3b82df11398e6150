"""`tessera train` on real Ray Train workers with real DeepSpeed pipelines over gloo (tiny configs).

One module-scoped set of runs feeds all checks: a plain 1-worker 1-stage run and a 2-worker 2-stage run with
bubble filling of the same model, seed and data, and a run resumed from the 2-stage run's first checkpoint.
Latents are "online" (fresh images, flips and a frozen VAE forward per micro-batch): that frozen work is what
the filler moves into the pipeline's idle slots, so one comparison checks both that the pipeline split and
the filler's reordering of the frozen work leave the losses unchanged (a reordered or wrong micro-batch
stream would draw other samples and noise). Each Ray Train run costs 15-20 s of start-up on this machine.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from _local_training import run_one_worker_training

from cluster.train import run_training
from runtime.training.checkpoint import checkpoint_name
from runtime.training.config import TrainConfig, UnetStage, VaeStage

pytestmark = pytest.mark.slow

STEPS = 4


def _config(run_dir, workers: int, stages: int, **extra) -> TrainConfig:
    return TrainConfig(
        workers=workers,
        stages=stages,
        device="cpu",
        seed=3,
        run_dir=str(run_dir),
        checkpoint_every=2,
        progress=False,
        vae=VaeStage(steps=0, batch_size=2, resolution=32),
        unet=UnetStage(
            steps=STEPS, micro_batch=2, micro_batches=3, resolution=32, warmup_steps=1, lr=2e-3,
            latents="online", bubble_filling=stages > 1,
            # DeepSpeed takes the clipping norm per pipeline stage; parity holds with clipping off.
            gradient_clipping=0.0,
        ),
        **extra,
    )


def _losses(records, phase="unet"):
    return [r["loss"] for r in records if r["phase"] == phase]


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    one = run_one_worker_training(_config(root / "one", workers=1, stages=1))  # the same worker, no Ray Train
    two = run_training(_config(root / "two", workers=2, stages=2))
    resumed_dir = root / "resumed"
    first = root / "two" / "checkpoints" / checkpoint_name("unet", 2)
    shutil.copytree(first, resumed_dir / "checkpoints" / first.name)
    resumed = run_training(_config(resumed_dir, workers=2, stages=2, resume=True))
    return {"root": root, "one": one, "two": two, "resumed": resumed}


def test_two_stage_pipeline_with_bubble_filling_matches_one_stage_losses(runs):
    one, two = _losses(runs["one"]), _losses(runs["two"])
    assert len(one) == len(two) == STEPS
    assert one[0] != one[-1]  # the model trains: losses move
    assert all(r["frozen_s"] > 0 for r in runs["one"] + runs["two"])  # the frozen work ran on the first stage
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-4)


def test_resume_continues_the_uninterrupted_trajectory(runs):
    resumed = runs["resumed"]
    assert [r["step"] for r in resumed] == [3, 4]
    torch.testing.assert_close(
        torch.tensor(_losses(resumed)), torch.tensor(_losses(runs["two"])[2:]), rtol=1e-5, atol=1e-6
    )


def test_checkpoint_loads_into_the_render_path_with_trained_weights(runs):
    from pipelines.builtin.image import build_image_pipeline
    from pipelines.loading import load_pipeline
    from pipelines.sampling import DenoiseLoop, batched_cfg_predictor, encode_conditioning

    directory = runs["root"] / "two" / "checkpoints" / checkpoint_name("unet", STEPS) / "pipeline"
    pipe = load_pipeline(directory)
    initial = build_image_pipeline(seed=3)
    # Both stages' weights were gathered into the checkpoint: the first and last layers both moved.
    for name in ("conv_in.weight", "conv_out.weight"):
        moved = pipe.unet.state_dict()[name] - initial.unet.state_dict()[name]
        assert moved.abs().max() > 1e-4, name
    key = next(k for k in initial.text_encoder.state_dict() if k.endswith("token_embedding.weight"))
    text_moved = pipe.text_encoder.state_dict()[key] - initial.text_encoder.state_dict()[key]
    assert text_moved.abs().max() > 1e-4
    cond = encode_conditioning(pipe, "a red circle on a blue background", "", 3.0, pipe.unet.device)
    loop = DenoiseLoop(pipe, "ddim", 2, seed=0, height=32, width=32, predict_noise=batched_cfg_predictor(pipe.unet, cond))
    while not loop.done:
        loop.step()
    assert loop.latents.shape == (1, 4, 4, 4) and torch.isfinite(loop.latents).all()
