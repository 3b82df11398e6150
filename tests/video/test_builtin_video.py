"""The built-in video model: registered, loads from its directory, renders a block-streamed MP4 locally."""

from __future__ import annotations

import json

import torch

from cluster.jobs.video import VideoSpec
from pipelines.builtin import BUILTIN_MODELS, resolve_model
from pipelines.builtin.video import write_builtin_video
from pipelines.families.wan.loading import load_video_pipeline
from pipelines.video_writer import probe_mp4
from runtime.jobs.video_session import VideoSession


def test_registered_and_small():
    assert BUILTIN_MODELS["builtin-video"].kind == "video"
    path = resolve_model("builtin-video")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size < 5 * 2**20
    config = json.loads((path / "transformer" / "config.json").read_text())
    assert config["_class_name"] == "WanTransformer3DModel" and config["num_layers"] >= 3


def test_shipped_weights_are_trained_from_the_writers_starting_point(tmp_path):
    """write_builtin_video(seed=0) makes the training's random start: same architecture, VAE and tokenizer;
    the committed transformer and text encoder are the trained ones (pipelines/builtin/TRAINING.md)."""
    torch.set_num_threads(1)
    start = load_video_pipeline(write_builtin_video(tmp_path / "builtin-video"))
    shipped = load_video_pipeline(resolve_model("builtin-video"))
    public = lambda config: {k: v for k, v in dict(config).items() if not k.startswith("_")}  # noqa: E731
    assert public(start.transformer.config) == public(shipped.transformer.config)
    initial, trained = start.transformer.state_dict(), shipped.transformer.state_dict()
    assert initial.keys() == trained.keys()
    for name in ("patch_embedding.weight", "blocks.0.attn1.to_q.weight", "proj_out.weight"):
        assert (initial[name] - trained[name]).abs().max() > 1e-3, name
    for (name, a), (_, b) in zip(start.vae.state_dict().items(), shipped.vae.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)  # the image model's VAE, frozen in training


def test_local_render_streams_every_block_into_the_mp4(tmp_path):
    torch.set_num_threads(1)
    pipe = load_video_pipeline(resolve_model("builtin-video"))
    task = VideoSpec(
        model=str(resolve_model("builtin-video")),
        dtype="float32",
        prompt="red stripes",
        height=32,
        width=48,
        frames=12,
        block_frames=3,
        context_frames=1,
        steps=3,
        seed=0,
        fps=6.0,
    )
    session = VideoSession(pipe, task, group=None, video_path=str(tmp_path / "video.mp4"))
    while not session.pipeline.done:
        session.advance(2)
        assert session.writer.frames == 3 * len(session.pipeline.finished)  # written as each block leaves
    report = session.finish()
    assert report["blocks_finished"] == [0, 1, 2, 3]
    assert probe_mp4(tmp_path / "video.mp4") == {"frames": 12, "height": 32, "width": 48, "fps": 6.0}
