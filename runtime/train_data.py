"""Training batches from the procedural dataset, deterministic by (seed, step, replica).

Every draw comes from a generator seeded by the step (or micro-batch) index and the data-parallel replica,
so a resumed run sees exactly the batches an uninterrupted one would, and the first and last pipeline
stages (which both read the micro-batch stream, for inputs and for targets) see the same micro-batches.
"""

from __future__ import annotations

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


class NoisedLatentStream:
    """Micro-batches ((noisy latent, timesteps, token ids), noise) for one data-parallel replica.

    `inputs=False` (a last stage that is not also first) skips building the model inputs and yields empty
    placeholders in their place; the noise targets are drawn identically either way.
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
        cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
        cache_size: int,
    ) -> None:
        self.scheduler = scheduler
        self.latent_shape = latent_shape
        self.micro_batch = micro_batch
        self.seed = seed
        self.replica = replica
        self.index = start_micro_batch
        self.caption_dropout = caption_dropout
        self.cache = cache
        self.cache_size = cache_size

    def __iter__(self) -> Iterator:
        return self

    def __next__(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        gen = _generator(self.seed, 2, self.index, self.replica)
        self.index += 1
        n = self.micro_batch
        picks = torch.randint(self.cache_size, (n,), generator=gen)
        timesteps = torch.randint(self.scheduler.config.num_train_timesteps, (n,), generator=gen)
        noise = torch.randn((n, *self.latent_shape), generator=gen)
        dropped = torch.rand(n, generator=gen) < self.caption_dropout
        if self.cache is None:
            empty = torch.empty(0)
            return (empty, empty.long(), empty.long()), noise
        latents, ids, empty_ids = self.cache
        noisy = self.scheduler.add_noise(latents[picks], noise, timesteps)
        token_ids = torch.where(dropped[:, None], empty_ids[None], ids[picks])
        return (noisy, timesteps, token_ids), noise


def shapes(resolution: int, seed: int) -> ShapesDataset:
    return ShapesDataset(ShapesConfig(size=resolution, seed=seed))
