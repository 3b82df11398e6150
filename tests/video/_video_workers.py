"""Functions the frame-pipeline tests run on every rank of a real gloo group (see _parallel_dist)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from _video_models import LATENT, make_scheduler, tiny_text, tiny_wan

from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families.wan.frames import WanFrameAdapter

SCENARIOS = {
    "plain": dict(frames=12, block_frames=2, context_frames=1, steps=4, seed=3),
    "wide_context": dict(frames=9, block_frames=3, context_frames=2, steps=5, seed=7),
    "cfg": dict(frames=6, block_frames=2, context_frames=1, steps=3, seed=5, guidance_scale=4.0),
    "strided": dict(frames=12, block_frames=2, context_frames=1, steps=4, seed=3, block_stride=3),
}
NEGATIVE_SEED = 2
"""Seed of the stand-in negative prompt embeddings (``tiny_text``) of guided scenarios."""


def run_pipeline(
    config: dict, group=None, segment: int | None = None, dtype: torch.dtype = torch.float32
) -> dict:
    """One scenario's output on this rank: finished latents, sampler order, leaving order, stats; the
    transformer in ``dtype`` (its activations then cross the stages in it)."""
    outputs: dict[int, torch.Tensor] = {}
    config = FramePipelineConfig(**config)
    pipe = FramePipeline(
        tiny_wan(layers=4).to(dtype),
        config,
        LATENT,
        tiny_text(),
        make_scheduler,
        on_block_done=lambda block, latent: outputs.__setitem__(block, latent.clone()),
        group=group,
        negative_text=tiny_text(NEGATIVE_SEED) if config.guided else None,
        make_adapter=WanFrameAdapter,
    )
    if segment is None:
        pipe.advance()
    else:  # the Ray path advances all stages a few ticks per call
        while not pipe.done:
            pipe.advance(segment)
    stats = pipe.close()
    return {
        "latents": outputs,
        "applied": pipe.applied,
        "finished": pipe.finished,
        "stats": stats,
        "boundaries": pipe.boundaries,
    }


def pipeline_scenarios(rank: int, world: int) -> dict:
    group = dist.group.WORLD
    results = {name: run_pipeline(config, group) for name, config in SCENARIOS.items()}
    results["plain_segmented"] = run_pipeline(SCENARIOS["plain"], group, segment=2)
    results["plain_bfloat16"] = run_pipeline(SCENARIOS["plain"], group, dtype=torch.bfloat16)
    return results


def too_many_stages(rank: int, world: int) -> dict:
    """The errors for more stages than frame blocks and than transformer blocks, on every rank."""
    errors = {}
    for name, config, layers in (
        ("blocks", dict(frames=4, block_frames=2, steps=2), 4),
        ("layers", dict(frames=12, block_frames=2, steps=2), 2),
    ):
        try:
            FramePipeline(
                tiny_wan(layers=layers),
                FramePipelineConfig(**config),
                LATENT,
                tiny_text(),
                make_scheduler,
                group=dist.group.WORLD,
                make_adapter=WanFrameAdapter,
            )
            errors[name] = None
        except ValueError as err:
            errors[name] = str(err)
    return errors


def render_session(
    rank: int, world: int, model_dir: str, out_dir: str, task_fields: dict, device: str = "cpu", make_writer=None
) -> dict:
    """A video render of a pipeline directory through VideoSession on this rank (``world`` 1: no group), the model
    on ``device``, stage 0's decoded frames to an MP4 in ``out_dir`` (or to ``make_writer()``'s sink); returns the
    finished latents stage 0 saw and the stage's report."""
    session = open_session(world, model_dir, f"{out_dir}/video-{world}.mp4", task_fields, device, make_writer)
    latents = keep_latents(session)
    session.advance()
    return {"latents": latents, "report": session.finish()}


def open_session(world: int, model_dir: str, video_path: str, task_fields: dict, device: str = "cpu", make_writer=None):
    """A ``VideoSession`` of a pipeline directory (any video family) on this rank's group (``world`` 1: none)."""
    from cluster.jobs.video import VideoSpec
    from pipelines.families import family_for_dir
    from runtime.jobs.video_session import VideoSession

    group = dist.group.WORLD if world > 1 else None
    task = VideoSpec(model=model_dir, **task_fields)
    pipe = family_for_dir(model_dir).load(model_dir, task.dtype, device)
    return VideoSession(pipe, task, group, video_path=video_path, make_writer=make_writer)


def keep_latents(session) -> dict[int, torch.Tensor]:
    """The finished latents, by block, that the session's stage 0 writes from now on (filled as they finish)."""
    latents: dict[int, torch.Tensor] = {}
    write = session.pipeline.on_block_done
    if write is not None:  # stage 0: keep a copy of each finished latent on its way to the MP4

        def keep(block: int, latent: torch.Tensor) -> None:
            latents[block] = latent.clone()
            write(block, latent)

        session.pipeline.on_block_done = keep
    return latents


def check_two_stages_equal_one_worker(model_dir: str, out_dir: str, task_fields: dict, blocks: int) -> None:
    """A video of ``blocks`` frame blocks rendered on 2 stages (real gloo processes) equals the 1-worker render,
    block by block, within 1e-4."""
    from _parallel_dist import run_ranks

    reference = render_session(0, 1, model_dir, out_dir, task_fields)
    got = run_ranks(render_session, 2, model_dir, out_dir, task_fields, timeout=240)[0]
    assert sorted(got["latents"]) == sorted(reference["latents"]) == list(range(blocks))
    for block, latent in reference["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)


def render_sessions(rank: int, world: int, renders: list[tuple[str, str, dict]]) -> list[dict]:
    """``render_session`` for each (model_dir, out_dir, task_fields) in turn, on one process group."""
    return [render_session(rank, world, *render) for render in renders]


class NpyFrames:
    """A stage-0 sink (the ``StreamingMP4Writer`` interface) that keeps the decoded uint8 frames and saves them to
    ``path`` (.npy) on close: frames compared before a lossy encode, whose choices can part near-equal inputs."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.blocks: list = []
        self.frames = 0

    def append(self, frames) -> None:
        self.blocks.append(frames.copy())
        self.frames += int(frames.shape[0])

    def close(self) -> str:
        import numpy as np

        np.save(self.path, np.concatenate(self.blocks))
        return self.path

    def abort(self) -> None:
        self.blocks = []
