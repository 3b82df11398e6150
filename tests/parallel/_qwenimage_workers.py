"""A tiny diffusers Qwen-Image transformer, its single-device outputs, and the patch-parallel runs of the same
scenarios on each rank (spawned once per world size by ``_parallel_dist.run_ranks``).

The transformer is called through the Qwen-Image family's ``denoise`` (pack the unpacked band with
QwenImagePipeline's ``_pack_latents``, the whole image's shape, unpack the output), as a render calls it. The
batch of two carries a text mask (the second prompt two tokens shorter, padded), as two guidance branches of
different lengths are batched.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from _tiny_qwenimage import SCHEDULER, tiny_qwen_transformer
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

from parallel.patch.bands import Bounds, band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from pipelines.families.qwenimage import QWENIMAGE
from pipelines.families.qwenimage.conditioning import QwenConditioning
from pipelines.families.qwenimage.patch import parallelize_qwen_patch

TEXT_DIM = 32
TEXT_TOKENS = 6
STEPS = 3
# (B, C, H, W) unpacked: H=14 latent rows = 7 rows of 2x2 tokens, split 8/6 over 2 ranks and 6/4/4 over 3
SHAPE = (2, 4, 14, 10)
LOOP = (1, 4, 14, 10)


def tiny_qwen() -> torch.nn.Module:
    return tiny_qwen_transformer(seed=0, text_dim=TEXT_DIM)


def latent(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def conditioning(batch: int, rows: int, columns: int) -> tuple[QwenConditioning, dict[str, Any]]:
    """A prompt's conditioning as the Qwen-Image family encodes it (random text), and its inputs for ``batch``
    latents: one prompt unmasked, two with the second one's last two tokens masked out."""
    text = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=torch.Generator().manual_seed(3))
    inputs: dict[str, Any] = {"encoder_hidden_states": text, "encoder_hidden_states_mask": None}
    cond = QwenConditioning(QWENIMAGE, inputs, None, 1.0, extra={"img_shape": (1, rows // 2, columns // 2)})
    if batch == 2:
        mask = torch.ones(2, TEXT_TOKENS, dtype=torch.long)
        mask[1, -2:] = 0
        inputs = {
            "encoder_hidden_states": text.expand(2, -1, -1) * mask[..., None],
            "encoder_hidden_states_mask": mask,
        }
    return cond, inputs


def forward(model: torch.nn.Module, x: torch.Tensor, full_rows: int, t: float = 0.6) -> torch.Tensor:
    """One denoiser call on ``x`` (the latent or a band of it; ``full_rows``: the whole latent's rows)."""
    cond, inputs = conditioning(x.shape[0], full_rows, x.shape[-1])
    with torch.no_grad():
        return QWENIMAGE.denoise(model, x, torch.tensor(t * 1000), inputs, cond)


def scheduler() -> FlowMatchEulerDiscreteScheduler:
    sched = FlowMatchEulerDiscreteScheduler(**SCHEDULER)
    QWENIMAGE.set_timesteps(None, sched, STEPS, LOOP, "cpu")
    return sched


def denoise(
    model: torch.nn.Module,
    bounds: Bounds | None = None,
    rank: int = 0,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """The flow-matching loop on one band of the unpacked latent (noise drawn at the full shape, then sliced)."""
    sched = scheduler()
    x = latent(LOOP, seed=7)
    if bounds is not None:
        x = slice_band(x, bounds, rank)
    for t in sched.timesteps:
        noise = forward(model, x, LOOP[2], float(t) / 1000)
        if on_step is not None:
            on_step()
        x = sched.step(noise, t, x, return_dict=False)[0]
    return x


def denoise_packed(model: torch.nn.Module) -> torch.Tensor:
    """The same loop as QwenImagePipeline runs it: the packed latent is what the scheduler steps."""
    sched = scheduler()
    b, c, h, w = LOOP
    x = QwenImagePipeline._pack_latents(latent(LOOP, seed=7), b, c, h, w)
    cond, inputs = conditioning(1, h, w)
    for t in sched.timesteps:
        with torch.no_grad():
            noise = model(
                hidden_states=x,
                timestep=t.expand(1) / 1000,
                img_shapes=[[cond.extra["img_shape"]]],
                return_dict=False,
                **inputs,
            )[0]
        x = sched.step(noise, t, x, return_dict=False)[0]
    return QwenImagePipeline._unpack_latents(x, h, w, 1).squeeze(2)


def reference() -> dict[str, torch.Tensor]:
    model = tiny_qwen()
    return {
        "forward": forward(model, latent(SHAPE, 11), SHAPE[2]),
        "loop": denoise(model),
        "packed": denoise_packed(model),
    }


def band_scenarios(rank: int, world: int) -> dict[str, Any]:
    model = tiny_qwen()
    group = dist.group.WORLD
    bounds = band_bounds(SHAPE[2], world, align=2)
    res: dict[str, Any] = {"bounds": bounds}
    for source in ("kv", "input"):
        handle = parallelize_qwen_patch(model, group, PatchConfig("sync", kv_source=source))
        band = slice_band(latent(SHAPE, 11), bounds, rank)
        res[f"forward_{source}"] = gather_bands(forward(model, band, SHAPE[2]), group, bounds)
        res[f"bytes_{source}"] = handle.bytes_sent.last_step
        res[f"token_bounds_{source}"] = handle.bounds
        handle.reset()
        res[f"loop_{source}"] = gather_bands(denoise(model, bounds, rank), group, bounds)
        handle.remove()

    handle = parallelize_qwen_patch(model, group, PatchConfig("displaced", warmup_steps=STEPS))
    res["loop_displaced_warm"] = gather_bands(denoise(model, bounds, rank), group, bounds)
    handle.remove()

    handle = parallelize_qwen_patch(model, group, PatchConfig("displaced", warmup_steps=1))
    syncs: list[bool] = []
    loop = denoise(model, bounds, rank, on_step=lambda: syncs.append(handle.last_forward_was_sync))
    res["loop_displaced"] = gather_bands(loop, group, bounds)
    res["displaced_syncs"] = syncs
    handle.remove()
    res["after_remove"] = forward(model, latent(SHAPE, 11), SHAPE[2])  # whole latent, no communication

    if world == 2:
        handle = parallelize_qwen_patch(model, group, PatchConfig("sync"))
        band = slice_band(latent(SHAPE, 11), bounds, rank)
        # the band's own rows as if they were a whole image: its shape is not the whole image's
        res["band_shape"] = _message(lambda: forward(model, band, band.shape[-2]))
        handle.remove()
    return res


def _message(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except ValueError as e:
        return f"ValueError: {e}"
    except Exception:  # noqa: BLE001 - the test reports what was raised instead
        return "wrong exception:\n" + traceback.format_exc()
    return "no exception"
