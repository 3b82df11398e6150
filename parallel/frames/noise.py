"""Coordinated noise: one shared noise template, from which every frame block's initial noise is cut.

As in DualParal, the template is one block's worth of Gaussian noise drawn from the job's seed, and
block ``b`` starts from the template's frames in a permuted order drawn from (seed, b). Any worker
(or a resumed job) rebuilds any block's noise from the seed alone, so no noise is ever sent, and the
blocks share low-frequency structure, which keeps neighbouring blocks coherent.
"""

from __future__ import annotations

import torch

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: decorrelates the seeds of neighbouring blocks


def noise_template(seed: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[1, C, F, H, W] Gaussian template drawn on the CPU (identical on every device and worker), in float32 and then
    rounded to ``dtype``: torch 2.11's CPU sampler draws another sequence in bfloat16/float16 than in float32 (from
    16 values on; 2.13's equals the float32 draw rounded), so a half-precision draw made a render depend on the torch
    version (a bfloat16 CogVideoX block was 3.5 off its diffusers reference under 2.11, found on the lent GPU)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, *shape), generator=generator, dtype=torch.float32).to(dtype)


def block_step_seed(seed: int, block: int) -> int:
    """Seed of block ``block``'s sampler noise (a stochastic scheduler's per-step draws), apart from the
    template's and the permutations' seeds."""
    return (seed * _MIX + 2**40 + block) % 2**63


def block_noise(template: torch.Tensor, seed: int, block: int) -> torch.Tensor:
    """Block ``block``'s initial noise: the template's frames (dim 2) in an order drawn from (seed, block)."""
    generator = torch.Generator().manual_seed((seed * _MIX + block + 1) % 2**63)
    order = torch.randperm(template.shape[2], generator=generator)
    return template[:, :, order].clone()
