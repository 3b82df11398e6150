"""Where the video DiT loses its motion: probes on held-out clips of the training distribution.

    python -m bench.video_denoise_probe [--model DIR] [--clips 8]

Not a speed benchmark. Three probes, on vertical-stripe clips of the procedural video dataset drawn with
another seed than training's (`pipelines/video_dataset.py`, dataset seed 1), 10 frames at 64 px:

1. **VAE round trip**: encode and decode each clip; stripe shifts in one direction (of 9 frame pairs). Says
   whether the frozen per-frame VAE keeps the motion at all.
2. **Does the DiT use the other frames?** Velocity MSE at a few noise levels for the clips in order, the same
   clips with their frames shuffled in time (incoherent motion), and each frame alone. Lower error in order
   than shuffled means the model draws on the neighbouring frames' evidence at that noise level.
3. **Which noise levels decide the motion?** Each clip noised to sigma s0 (same noise), then sampled to 0
   with the model's own Euler flow-matching sampler (20 steps, the scheduler's shift); stripe shifts in one
   direction of the decoded result. From sigma 1 this is an ordinary render; from lower sigmas the clip's
   own layout survives and the question is whether the model continues its motion.
4. **Do consecutive frame blocks move the same way?** 16 frames rendered for "blue and yellow vertical
   stripes" (seeds 0..7) in two blocks of 8: (a) by the frame pipeline itself (`VideoSession`, one process,
   1 and 2 context frames), (b) in sequence with the model's sampler, block 2 overlapping block 1's last k
   frames, which are replaced at every step by block 1's finished frames noised to the current sigma
   (replacement conditioning, k = 0..3). Per video: the dominant direction of each block's 7 frame pairs and
   whether the two agree.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from bench.video_motion import STRIPES_PROMPT, stripe_stats, to_frames
from cluster.jobs.video import VideoSpec
from cluster.video_strip import read_frames
from parallel.training.layers import run_layers
from pipelines.builtin import resolve_model
from pipelines.families.wan.loading import load_video_pipeline
from pipelines.families.wan.training import wan_layers
from pipelines.video_dataset import VideoShapesConfig, VideoShapesDataset
from runtime.jobs.video_session import VideoSession
from runtime.training.data import tokenize

SIGMAS = (0.3, 0.6, 0.9)
STARTS = (1.0, 0.9, 0.7, 0.5, 0.3)


def stripe_clips(count: int, seed: int = 1) -> tuple[torch.Tensor, list[str]]:
    """The first `count` vertical-stripe clips of the dataset with `seed`: [count, 10, 3, 64, 64] in [-1, 1]."""
    data = VideoShapesDataset(VideoShapesConfig(size=64, frames=10, seed=seed))
    picked, index = [], 0
    while len(picked) < count:
        kind, params, _, _ = data.describe(index)
        if kind == "stripes" and params.get("vertical"):
            picked.append(index)
        index += 1
    return data.batch(picked)


def one_direction(clip: torch.Tensor) -> int:
    return stripe_stats(to_frames(clip))["same_direction"]


def velocity(layers, noisy: torch.Tensor, sigma: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The DiT's flow-matching velocity at noise level `sigma` (per clip)."""
    return run_layers(layers, (noisy, sigma * 1000, ids))


@torch.no_grad()
def probe(pipe, count: int) -> dict:
    torch.manual_seed(0)
    layers = wan_layers(pipe.transformer.eval(), pipe.text_encoder.eval())
    vae, scaling = pipe.vae.eval(), pipe.vae.config.scaling_factor
    clips, captions = stripe_clips(count)
    ids = tokenize(pipe.tokenizer, captions)
    result: dict = {"pixels": [one_direction(c) for c in clips]}
    z = torch.stack([vae.encode(c).latent_dist.mean for c in clips]) * scaling  # [n, F, C, h, w]
    result["vae_round_trip"] = [one_direction(vae.decode(f / scaling).sample) for f in z]
    z = z.transpose(1, 2)  # [n, C, F, h, w], the transformer's layout
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(z.shape, generator=gen)
    order = torch.randperm(z.shape[2], generator=gen)
    mse = {}
    for s in SIGMAS:
        sigma = torch.full((count,), s)
        row = {}
        for name, clean in (("in order", z), ("shuffled", z[:, :, order])):
            row[name] = float(
                ((velocity(layers, (1 - s) * clean + s * noise, sigma, ids) - (noise - clean)) ** 2).mean()
            )
        alone = []
        for f in range(z.shape[2]):
            clean, eps = z[:, :, f : f + 1], noise[:, :, f : f + 1]
            alone.append(
                float(((velocity(layers, (1 - s) * clean + s * eps, sigma, ids) - (eps - clean)) ** 2).mean())
            )
        row["each frame alone"] = float(np.mean(alone))
        mse[f"{s:g}"] = {k: round(v, 4) for k, v in row.items()}
    result["velocity_mse"] = mse
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler_config)
    scheduler.set_timesteps(20)
    sigmas = scheduler.sigmas
    sampled = {}
    for s0 in STARTS:
        first = int((sigmas[:-1] <= s0 + 1e-6).nonzero()[0])
        x = (1 - sigmas[first]) * z + sigmas[first] * noise
        for j in range(first, len(sigmas) - 1):
            x = x + (sigmas[j + 1] - sigmas[j]) * velocity(layers, x, sigmas[j].expand(count), ids)
        sampled[f"{float(sigmas[first]):.2f}"] = [
            one_direction(vae.decode(v.transpose(0, 1) / scaling).sample) for v in x
        ]
    result["sampled_from_sigma"] = sampled
    return result


def block_directions(frames: list[np.ndarray]) -> tuple[int, int, bool]:
    """Pairs (of 7) moving in each block's dominant direction, and whether the two blocks' directions agree."""
    shifts = np.array(stripe_stats(frames)["shifts"])
    first, second = np.sign(np.median(shifts[:7])), np.sign(np.median(shifts[8:]))
    return (
        int((np.sign(shifts[:7]) == first).sum()),
        int((np.sign(shifts[8:]) == second).sum()),
        bool(first == second),
    )


def summarise(rows: list[tuple[int, int, bool]]) -> dict:
    return {
        "blocks_agree": f"{sum(r[2] for r in rows)} of {len(rows)}",
        "pairs_in_block_direction_median": float(np.median([r[0] for r in rows] + [r[1] for r in rows])),
    }


def pipeline_blocks(pipe, model_path: str, seeds: int, context_frames: int, stride: int = 1) -> dict:
    """16 frames in two blocks through the frame pipeline (one process), per seed; block 2 enters the queue
    `stride` steps after block 1."""
    rows = []
    for seed in range(seeds):
        with tempfile.TemporaryDirectory() as out:
            task = VideoSpec(
                model=model_path,
                dtype="float32",
                prompt=STRIPES_PROMPT,
                height=64,
                width=64,
                frames=16,
                block_frames=8,
                context_frames=context_frames,
                steps=10,
                seed=seed,
                fps=8.0,
                block_stride=stride,
                guidance_scale=1.0,
            )
            session = VideoSession(pipe, task, group=None, video_path=f"{out}/video.mp4")
            while not session.pipeline.done:
                session.advance(4)
            session.finish()
            rows.append(block_directions(read_frames(f"{out}/video.mp4")))
    return summarise(rows)


@torch.no_grad()
def replacement_blocks(pipe, seeds: int, overlap: int) -> dict:
    """Two 8-frame blocks sampled in sequence; block 2's first `overlap` frames replaced by block 1's last."""
    layers = wan_layers(pipe.transformer.eval(), pipe.text_encoder.eval())
    vae, scaling = pipe.vae.eval(), pipe.vae.config.scaling_factor
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler_config)
    scheduler.set_timesteps(10)
    sigmas, ids = scheduler.sigmas, tokenize(pipe.tokenizer, [STRIPES_PROMPT])

    def sample(frames: int, seed: int, known: torch.Tensor | None) -> torch.Tensor:
        noise = torch.randn((1, 4, frames, 8, 8), generator=torch.Generator().manual_seed(seed))
        x = noise.clone()
        for j in range(len(sigmas) - 1):
            if known is not None:
                x[:, :, : known.shape[2]] = (1 - sigmas[j]) * known + sigmas[j] * noise[
                    :, :, : known.shape[2]
                ]
            x = x + (sigmas[j + 1] - sigmas[j]) * velocity(layers, x, sigmas[j].expand(1), ids)
        return x

    rows = []
    for seed in range(seeds):
        first = sample(8, seed, None)
        second = sample(8 + overlap, 1000 + seed, first[:, :, 8 - overlap :] if overlap else None)[
            :, :, overlap:
        ]
        video = torch.cat([first, second], 2)[0].transpose(0, 1) / scaling
        rows.append(block_directions(to_frames(vae.decode(video).sample)))
    return summarise(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="builtin-video", help="model name or video pipeline directory")
    parser.add_argument("--clips", type=int, default=8, help="clips for probes 1-3, seeds for probe 4")
    parser.add_argument("--strides", default="1", help="block strides of probe 4a, comma-separated")
    parser.add_argument("--blocks-only", action="store_true", help="probe 4a only (the frame pipeline)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model_path = str(resolve_model(args.model))
    pipe = load_video_pipeline(model_path)
    result = {"model": args.model} if args.blocks_only else {"model": args.model, **probe(pipe, args.clips)}
    result["frame_pipeline_blocks"] = {
        f"context {c}" + (f", stride {k}" if k != 1 else ""): pipeline_blocks(pipe, model_path, args.clips, c, k)
        for k in (int(x) for x in args.strides.split(","))
        for c in (1, 2)
    }
    if not args.blocks_only:
        result["replacement_blocks"] = {
            f"overlap {k}": replacement_blocks(pipe, args.clips, k) for k in range(4)
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
