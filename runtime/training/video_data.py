"""Flow-matching training batches of the video DiT from the procedural video dataset.

Clips are encoded once, frame by frame, by the frozen per-frame VAE into a latent cache. Each micro-batch
picks clips, a noise level sigma per clip from the sampler's own shifted schedule (Wan's flow matching,
FlowMatchEulerDiscreteScheduler with `shift`), and Gaussian noise:

    noisy = (1 - sigma) * latent + sigma * noise,   timestep = 1000 * sigma,   target = noise - latent

which is the velocity FlowMatchEulerDiscreteScheduler.step integrates at render time. The target needs the
clean latent, so the last pipeline stage holds the cache too (unlike the UNet's epsilon target, noise alone).
Every draw comes from a generator seeded by (seed, micro-batch index, replica), as in runtime/training/data.py:
a resumed run and every stage see the same micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pipelines.video_dataset import VideoShapesDataset
from runtime.training.data import _generator, tokenize


@torch.no_grad()
def encode_clip_cache(
    vae, tokenizer, dataset: VideoShapesDataset, count: int, scaling: float, chunk: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `count` clips as scaled latent means [count, C, F, h, w], their token ids, the empty prompt's."""
    latents, ids = [], []
    for start in range(0, count, chunk):
        clips, captions = dataset.batch(list(range(start, min(count, start + chunk))))
        n, frames = clips.shape[:2]
        flat = clips.flatten(0, 1).to(vae.device, vae.dtype)
        z = vae.encode(flat).latent_dist.mean * scaling
        latents.append(z.unflatten(0, (n, frames)).transpose(1, 2).cpu())
        ids.append(tokenize(tokenizer, captions))
    return torch.cat(latents), torch.cat(ids), tokenize(tokenizer, [""])[0]


def training_shift(sigma_shift: float, scheduler_config: dict) -> float:
    """The time shift training draws noise levels with: `dit.sigma_shift`, or the sampler's own when 0."""
    return sigma_shift if sigma_shift > 0 else float(scheduler_config.get("shift", 1.0))


def context_sigmas(levels: torch.Tensor, frames: int, offset: float, shift: float) -> torch.Tensor:
    """Per-frame noise levels [n, frames] for clips whose edge frames stand for a render's context frames.

    In the frame pipeline a block attends to its previous block's last frame computed one step further on
    (less noise) and to its next block's first frame from the tick before, two steps behind (more noise). So
    the first frame trains at level u - offset and the last at u + 2 offset, the frames between at u
    (unshifted levels, clamped to [0, 1], then shifted like the rest; offset 1 / steps is one sampling step).
    """
    per_frame = levels[:, None].repeat(1, frames)
    per_frame[:, 0] -= offset
    per_frame[:, -1] += 2 * offset
    return shifted_sigmas(per_frame.clamp(0.0, 1.0), shift).float()


def staggered_sigmas(
    levels: torch.Tensor, frames: int, probability: float, max_context: int, shift: float, gen: torch.Generator
) -> torch.Tensor:
    """Per-frame noise levels [n, frames] for clips that stand for a block continuing a cleaner one.

    With `probability` per clip and per edge, the first k frames (k uniform in 1..max_context) share one level
    drawn uniformly below the clip's (down to clean), and the last k' frames one drawn above it (up to pure
    noise): the previous block's tail is further along than the block it borders, and the next block's head
    behind it, by any number of steps when blocks enter the queue several steps apart. Unlike
    `context_sigmas`' fixed offset, the model sees every gap, clean context included, so it can learn to
    continue the motion that cleaner frames show (Diffusion Forcing's idea, restricted to the clip's edges).
    """
    n = levels.shape[0]
    head = torch.rand(n, generator=gen) < probability
    tail = torch.rand(n, generator=gen) < probability
    head_k = torch.randint(1, max_context + 1, (n, 1), generator=gen)
    tail_k = torch.randint(1, max_context + 1, (n, 1), generator=gen)
    below = levels * torch.rand(n, generator=gen, dtype=levels.dtype)
    above = levels + (1 - levels) * torch.rand(n, generator=gen, dtype=levels.dtype)
    index = torch.arange(frames)[None]
    per_frame = levels[:, None].repeat(1, frames)
    per_frame = torch.where(head[:, None] & (index < head_k), below[:, None], per_frame)
    per_frame = torch.where(tail[:, None] & (index >= frames - tail_k), above[:, None], per_frame)
    return shifted_sigmas(per_frame, shift).float()


def shifted_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Uniform u in (0, 1) mapped through the sampler's time shift: sigma = shift u / (1 + (shift - 1) u)."""
    return shift * u / (1 + (shift - 1) * u)


class FlowMatchStream:
    """Micro-batches ((noisy latent, timesteps, token ids), velocity target) for one data-parallel replica.

    `cache` None (a middle stage, which reads neither inputs nor targets) yields empty placeholders.
    """

    def __init__(
        self,
        cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        pool_size: int,
        micro_batch: int,
        seed: int,
        replica: int,
        start_micro_batch: int,
        caption_dropout: float,
        shift: float,
        num_train_timesteps: int = 1000,
        context_offset: float = 0.0,
        context_clean: float = 0.0,
        context_frames: int = 2,
    ) -> None:
        self.cache = cache
        self.pool_size = pool_size
        self.micro_batch = micro_batch
        self.seed = seed
        self.replica = replica
        self.index = start_micro_batch
        self.caption_dropout = caption_dropout
        self.shift = shift
        self.num_train_timesteps = num_train_timesteps
        self.context_offset = context_offset
        self.context_clean = context_clean
        self.context_frames = context_frames

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        gen = _generator(self.seed, 3, self.index, self.replica)
        self.index += 1
        n = self.micro_batch
        picks = torch.randint(self.pool_size, (n,), generator=gen)
        levels = torch.rand(n, generator=gen, dtype=torch.float64)
        sigmas = shifted_sigmas(levels, self.shift).float()
        dropped = torch.rand(n, generator=gen) < self.caption_dropout
        if self.cache is None:
            empty = torch.empty(0)
            return (empty, empty, empty.long()), empty
        latents, ids, empty_ids = self.cache
        clean = latents[picks]
        noise = torch.randn(clean.shape, generator=gen)
        if self.context_offset > 0:
            sigmas = context_sigmas(levels, clean.shape[2], self.context_offset, self.shift)  # [n, frames]
        elif self.context_clean > 0:  # drawn after the noise: the last stage's targets stay the same draws
            sigmas = staggered_sigmas(
                levels, clean.shape[2], self.context_clean, self.context_frames, self.shift, gen
            )
        s = sigmas.view(n, 1, -1, 1, 1)  # per clip or per frame
        noisy = (1 - s) * clean + s * noise
        token_ids = torch.where(dropped[:, None], empty_ids[None], ids[picks])
        return (noisy, sigmas * self.num_train_timesteps, token_ids), noise - clean
