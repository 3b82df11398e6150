"""Tiny diffusers models and a banded denoising loop shared by the parallel tests."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DDIMScheduler, PixArtTransformer2DModel, UNet2DConditionModel, UNet2DModel

from parallel.patch.bands import Bounds, slice_band

TEXT_LEN = 5
TEXT_DIM = 32


def tiny_unet(levels: int = 2, seed: int = 0) -> UNet2DConditionModel:
    """UNet2DConditionModel with ``levels`` resolutions (``levels - 1`` downsamples), cross-attention
    at every level but the last."""
    torch.manual_seed(seed)
    channels = (32, 64, 64)[:levels]
    down = tuple(["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"])
    up = tuple(["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1))
    model = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return _randomize(model.eval(), seed)


def tiny_unet2d(seed: int = 0) -> UNet2DModel:
    """Unconditional UNet2DModel whose attention blocks are diffusers' VAE-style ``Attention`` with
    its own GroupNorm and 4D input."""
    torch.manual_seed(seed)
    model = UNet2DModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=8,
    )
    return _randomize(model.eval(), seed)


def tiny_pixart(seed: int = 0) -> PixArtTransformer2DModel:
    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=16,
        caption_channels=TEXT_DIM,
        sample_size=16,
        patch_size=2,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )
    return _randomize(model.eval(), seed)


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Some diffusers layers start at exactly zero (e.g. output projections): give those small random
    values so that every layer matters in the comparisons."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def text_embeddings(batch: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g)


def model_call(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``f(latent, t, text) -> noise prediction`` for either model type (PixArt: first half of channels)."""
    if isinstance(model, PixArtTransformer2DModel):

        def f(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            out = model(
                x,
                encoder_hidden_states=text,
                timestep=t.expand(x.shape[0]),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            ).sample
            return out[:, : x.shape[1]]

        return f

    if isinstance(model, UNet2DModel):  # unconditional: text is ignored

        def u(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            return model(x, t).sample

        return u

    def g(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return model(x, t, encoder_hidden_states=text).sample

    return g


def denoise(
    model: torch.nn.Module,
    shape: tuple[int, int, int, int],
    steps: int,
    bounds: Bounds | None = None,
    rank: int = 0,
    guidance: float | None = None,
    combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
    branch: str | None = None,
    seed: int = 7,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """DDIM loop on one band (``bounds``/``rank``) or on the full latent (``bounds`` None).

    Noise is drawn at the full shape and sliced. CFG: with ``combine`` None and ``guidance`` set, the
    batch is doubled (uncond, cond) in one forward; with ``combine`` set (CFG parallel), this rank runs
    only ``branch`` and ``combine`` returns the guided noise. ``on_step`` runs after each forward.
    """
    f = model_call(model)
    sched = DDIMScheduler(num_train_timesteps=1000)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(shape, generator=g)
    if bounds is not None:
        latent = slice_band(latent, bounds, rank)
    b = shape[0]
    cond, uncond = text_embeddings(b, seed=3), text_embeddings(b, seed=4)
    with torch.no_grad():
        for t in sched.timesteps:
            if guidance is None:
                noise = f(latent, t, cond)
            elif combine is None:
                both = f(torch.cat([latent, latent]), t, torch.cat([uncond, cond]))
                nu, nc = both.chunk(2)
                noise = nu + guidance * (nc - nu)
            else:
                noise = combine(f(latent, t, cond if branch == "cond" else uncond))
            if on_step is not None:
                on_step()
            latent = sched.step(noise, t, latent).prev_sample
    return latent


def stitch(results: list[Any], model: str, key: str) -> torch.Tensor:
    """Concatenate the per-rank bands ``results[r][model][key]`` along rows."""
    return torch.cat([r[model][key] for r in results], dim=-2)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR of ``x`` against ``ref``, peak = the range of ``ref``."""
    mse = torch.mean((x - ref) ** 2).item()
    peak = (ref.max() - ref.min()).item()
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)
