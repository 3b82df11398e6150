"""Training batches from the procedural dataset, deterministic by (seed, step, replica).

Every draw comes from a generator seeded by the step (or micro-batch) index and the data-parallel replica,
so a resumed run sees exactly the batches an uninterrupted one would, and the first and last pipeline
stages (which both read the micro-batch stream, for inputs and for targets) see the same micro-batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from pipelines.datasets import ShapesConfig, ShapesDataset

LATENT_FACTOR = 8


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def vae_batch(dataset: ShapesDataset, seed: int, step: int, replica: int, batch_size: int) -> torch.Tensor:
    """Images [batch, 3, size, size] in [-1, 1] for one VAE step of one replica."""
    gen = _generator(seed, 1, step, replica)
    indices = torch.randint(len(dataset), (batch_size,), generator=gen).tolist()
    return dataset.batch(indices)[0]


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids [n, 77], padded as diffusers' encode_prompt pads them."""
    return tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


@torch.no_grad()
def encode_latent_cache(
    vae, tokenizer, dataset: ShapesDataset, count: int, scaling: float, chunk: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first `count` dataset images as scaled VAE latent means, their token ids and the empty prompt's."""
    latents, ids = [], []
    for start in range(0, count, chunk):
        images, captions = dataset.batch(list(range(start, min(count, start + chunk))))
        latents.append(vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean * scaling)
        ids.append(tokenize(tokenizer, captions))
    return torch.cat(latents).cpu(), torch.cat(ids), tokenize(tokenizer, [""])[0]


@torch.no_grad()
def latent_scaling(vae, dataset: ShapesDataset, count: int = 64) -> float:
    """1 / std of the VAE's latent means over `count` images: the pipeline's vae scaling_factor."""
    images, _ = dataset.batch(list(range(count)))
    means = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean
    return float(1.0 / means.float().std())


class CachedLatents:
    """Latents from a cache encoded once (encode_latent_cache): the cheap source, no per-step frozen work."""

    def __init__(self, cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
        self.latents, self.ids, self.empty_ids = cache

    def __len__(self) -> int:
        return len(self.latents)

    def __call__(self, picks: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents and token ids of the picked items (`flips` is ignored: cached latents are fixed)."""
        return self.latents[picks], self.ids[picks]


class OnlineLatents:
    """Latents encoded per micro-batch: fresh procedural images, random horizontal flips, the frozen VAE.

    This is the per-micro-batch frozen work that bubble filling (parallel/pipeline_bubble_fill.py) moves
    into the pipeline's idle slots: every step sees new images, at the cost of a VAE forward per sample.
    Captions name no left or right, so a flipped image keeps its caption.
    """

    def __init__(self, vae, tokenizer, dataset: ShapesDataset, scaling: float) -> None:
        self.vae, self.tokenizer, self.dataset, self.scaling = vae, tokenizer, dataset, scaling
        self.empty_ids = tokenize(tokenizer, [""])[0]

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def __call__(self, picks: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, captions = self.dataset.batch(picks.tolist())
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
        latents = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist.mean * self.scaling
        return latents.cpu(), tokenize(self.tokenizer, captions)


class NoisedLatentStream:
    """Micro-batches ((noisy latent, timesteps, token ids), noise) for one data-parallel replica.

    `source` None (a last stage that is not also first) skips building the model inputs and yields empty
    placeholders in their place; the noise targets are drawn identically either way. `pool_size` is the
    number of items the source picks from (len(source) on the first stage).
    """

    def __init__(
        self,
        scheduler,
        latent_shape: tuple[int, int, int],
        micro_batch: int,
        seed: int,
        replica: int,
        start_micro_batch: int,
        caption_dropout: float,
        source: CachedLatents | OnlineLatents | None,
        pool_size: int,
    ) -> None:
        self.scheduler = scheduler
        self.latent_shape = latent_shape
        self.micro_batch = micro_batch
        self.seed = seed
        self.replica = replica
        self.index = start_micro_batch
        self.caption_dropout = caption_dropout
        self.source = source
        self.pool_size = pool_size
        self.busy_s = 0.0
        """Seconds spent in __next__ so far: the frozen work's cost, whichever thread runs it."""

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        began = time.perf_counter()
        try:
            return self._draw()
        finally:
            self.busy_s += time.perf_counter() - began

    def _draw(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        gen = _generator(self.seed, 2, self.index, self.replica)
        self.index += 1
        n = self.micro_batch
        picks = torch.randint(self.pool_size, (n,), generator=gen)
        timesteps = torch.randint(self.scheduler.config.num_train_timesteps, (n,), generator=gen)
        noise = torch.randn((n, *self.latent_shape), generator=gen)
        dropped = torch.rand(n, generator=gen) < self.caption_dropout
        if self.source is None:
            empty = torch.empty(0)
            return (empty, empty.long(), empty.long()), noise
        flips = torch.rand(n, generator=gen) < 0.5
        latents, ids = self.source(picks, flips)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        token_ids = torch.where(dropped[:, None], self.source.empty_ids[None], ids)
        return (noisy, timesteps, token_ids), noise


def shapes(resolution: int, seed: int) -> ShapesDataset:
    return ShapesDataset(ShapesConfig(size=resolution, seed=seed))
