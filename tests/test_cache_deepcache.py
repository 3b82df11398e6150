"""DeepCache (``parallel.cache.deepcache``) on tiny UNets in SD 1.5's and SDXL's layout and on the built-in image
model's UNet: exact with a full step every step, deep blocks not run on reusing steps, hooks gone after close,
and on 2 row bands (real gloo ranks, sync mode) the same latent as on one device."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_pixart import nonzero
from diffusers import DDIMScheduler, UNet2DConditionModel
from diffusers.hooks import HookRegistry, ModelHook

from parallel.cache.config import CacheConfig
from parallel.cache.deepcache import HOOK, DeepCache, apply_deepcache, deep_modules
from parallel.patch.bands import band_bounds, gather_bands, slice_band
from parallel.patch.config import PatchConfig
from pipelines.builtin.image import scheduler_config

sys.path.insert(0, str(Path(__file__).resolve().parent / "parallel"))
from _parallel_dist import run_ranks  # noqa: E402

STEPS = 8
LATENT = (2, 4, 16, 16)
"""Batch 2 (the two guidance branches, batched as the render loop does), 16x16 latent."""
TEXT_WIDTH = 16


def tiny_unet(layout: str = "sd", seed: int = 0) -> UNet2DConditionModel:
    """Three down/up block pairs (two downsamplers), cross-attention below full resolution, as the built-in
    model; "sdxl" adds SDXL's pooled-text and time-id conditioning, linear projections and 2 layers a block."""
    torch.manual_seed(seed)
    extra: dict[str, Any] = {}
    if layout == "sdxl":
        extra = dict(
            layers_per_block=2,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=8 + 6 * 4,
        )
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=extra.pop("layers_per_block", 1),
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
        norm_num_groups=8,
        **extra,
    )
    return nonzero(unet.float(), seed + 1)


def conditioning(unet: torch.nn.Module, batch: int = LATENT[0]) -> dict[str, Any]:
    """The UNet's keyword inputs besides latent and timestep (text states, SDXL's added conditioning)."""
    g = torch.Generator().manual_seed(3)
    kwargs: dict[str, Any] = {
        "encoder_hidden_states": torch.randn(batch, 7, unet.config.cross_attention_dim, generator=g)
    }
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, pooled, generator=g),
            "time_ids": torch.tensor([[16.0, 16.0, 0.0, 0.0, 16.0, 16.0]] * batch),
        }
    return kwargs


def initial_latent(shape: tuple[int, ...] = LATENT) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(7))


def ddim_loop(
    unet: torch.nn.Module,
    cache: DeepCache | None,
    steps: int = STEPS,
    latent: torch.Tensor | None = None,
    first: int = 0,
    bounds=None,
    rank: int = 0,
) -> torch.Tensor:
    """A DDIM loop over ``steps`` steps from step ``first``, telling ``cache`` each step; with ``bounds``, on
    this rank's row band of the latent."""
    sched = DDIMScheduler(**scheduler_config())
    sched.set_timesteps(steps)
    x = initial_latent() if latent is None else latent
    if bounds is not None:
        x = slice_band(x, bounds, rank)
    kwargs = conditioning(unet, x.shape[0])
    with torch.no_grad():
        for step in range(first, steps):
            t = sched.timesteps[step]
            if cache is not None:
                cache.begin_step(step)
            noise = unet(x, t, **kwargs, return_dict=False)[0]
            if cache is not None:
                cache.end_step()
            x = sched.step(noise, t, x, eta=0.0, return_dict=False)[0]
    return x


def psnr(x: torch.Tensor, reference: torch.Tensor) -> float:
    """dB over the reference's peak-to-peak range."""
    mse = float(((x - reference) ** 2).mean())
    peak = float(reference.max() - reference.min())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(peak**2 / mse)).item()


def outer_modules(unet: torch.nn.Module, branch: int) -> list[torch.nn.Module]:
    return (
        list(unet.down_blocks[: branch + 1])
        + list(unet.up_blocks[-(branch + 1) :])
        + [unet.conv_in, unet.conv_out]
    )


def count_runs(modules: list[torch.nn.Module]) -> list[int]:
    """Counters of each module's real computation: a forward hook on its first convolution, which runs only
    when the module's own forward does, unlike a hook on the module itself."""
    counts = [0] * len(modules)
    for index, module in enumerate(modules):
        target = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))

        def hook(*_: Any, index: int = index) -> None:
            counts[index] += 1

        target.register_forward_hook(hook)
    return counts


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("layout", ["sd", "sdxl"])
def test_every_step_full_is_exact(layout: str) -> None:
    unet = tiny_unet(layout)
    plain = ddim_loop(unet, None)
    cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=1), first_step=0)
    cached = ddim_loop(unet, cache)
    assert cache.report()["reused_steps"] == []
    cache.close()
    assert torch.equal(cached, plain)


@pytest.mark.parametrize(("layout", "branch"), [("sd", 0), ("sd", 1), ("sdxl", 0)])
def test_reusing_steps_skip_the_deep_modules(layout: str, branch: int) -> None:
    unet = tiny_unet(layout)
    plain = ddim_loop(unet, None)
    config = CacheConfig(mode="deepcache", interval=3, branch=branch, warmup_steps=2)
    deep, outer = deep_modules(unet, branch), outer_modules(unet, branch)
    assert len(deep) == 1 + 2 * (2 - branch) + 1  # a downsampler, the deep down and up blocks, the mid block
    cache = apply_deepcache(unet, config, first_step=0)
    deep_runs, outer_runs = count_runs(deep), count_runs(outer)
    cached = ddim_loop(unet, cache)
    report = cache.report()
    cache.close()

    assert report == {
        "mode": "deepcache",
        "full_steps": [0, 1, 2, 5],
        "reused_steps": [3, 4, 6, 7],
        "branch": branch,
        "interval": 3,
    }
    assert deep_runs == [4] * len(deep), "deep modules ran on a reusing step"
    assert outer_runs == [STEPS] * len(outer), "outer modules must run every step"
    quality = psnr(cached, plain)
    assert not torch.equal(cached, plain)
    assert quality > 25, f"DeepCache latent vs full compute: PSNR {quality:.1f} dB"


def test_first_step_of_a_segment_is_full() -> None:
    """A job resumed between full steps (the schedule counts from the job's step 0) has nothing cached: its
    first step runs in full, and later steps follow the job's schedule."""
    unet = tiny_unet()
    cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=3, warmup_steps=2), first_step=0)
    ddim_loop(unet, cache, first=3)
    report = cache.report()
    cache.close()
    assert report["full_steps"] == [3, 5]
    assert report["reused_steps"] == [4, 6, 7]


def test_calls_outside_a_step_run_in_full() -> None:
    unet = tiny_unet()
    x, kwargs = initial_latent(), conditioning(unet)
    with torch.no_grad():
        expected = unet(x, 500, **kwargs).sample
        cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=3, warmup_steps=0), first_step=0)
        cache.begin_step(0)
        unet(x * 0.5, 900, **kwargs)
        cache.end_step()
        outside = unet(x, 500, **kwargs).sample
        cache.close()
    assert torch.equal(outside, expected)


def test_close_removes_every_hook() -> None:
    unet = tiny_unet()
    plain = ddim_loop(unet, None)
    deep = deep_modules(unet, 0)
    originals = [module.forward for module in deep]
    other = ModelHook()
    HookRegistry.check_if_exists_or_initialize(unet.mid_block).register_hook(other, "someone_else")
    cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=3), first_step=0)
    ddim_loop(unet, cache)
    cache.close()

    assert unet.mid_block._diffusers_hook.hooks == {"someone_else": other}, "another's hook must stay"
    unet.mid_block._diffusers_hook.remove_hook("someone_else", recurse=False)
    for module, original in zip(deep, originals):
        assert module.forward == original
    for name, module in unet.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        assert registry is None or HOOK not in registry.hooks, f"{name} still has {HOOK}"
    for module in deep:
        if module is not unet.mid_block:
            assert not hasattr(module, "_diffusers_hook") and "forward" not in module.__dict__
    assert torch.equal(ddim_loop(unet, None), plain)


@pytest.mark.parametrize("branch", [3, -1, 1.0, True])
def test_bad_branch_is_refused(branch: Any) -> None:
    unet = tiny_unet()
    with pytest.raises(ValueError, match="branch"):
        apply_deepcache(unet, CacheConfig(mode="deepcache", branch=branch), first_step=0)
    assert not any(hasattr(m, "_diffusers_hook") for m in unet.modules())


def test_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        apply_deepcache(tiny_unet(), CacheConfig(mode="deepcache", interval=0), first_step=0)


def test_not_a_unet_is_refused() -> None:
    with pytest.raises(ValueError, match="deepcache"):
        apply_deepcache(torch.nn.Linear(2, 2), CacheConfig(mode="deepcache"), first_step=0)


@pytest.mark.parametrize("branch", [0, 2])
def test_builtin_image_model(branch: int) -> None:
    """The built-in model's denoiser (a UNet2DConditionModel in SD's layout); branch 2, its last down block,
    reuses only the mid block."""
    from pipelines.builtin import resolve_model

    unet = UNet2DConditionModel.from_pretrained(resolve_model("builtin-image") / "unet").eval()
    latent = initial_latent((2, 4, 16, 16))
    kwargs = {"latent": latent, "steps": 6}
    plain = ddim_loop(unet, None, **kwargs)
    cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=2, branch=branch), first_step=0)
    deep_runs = count_runs(deep_modules(unet, branch))
    cached = ddim_loop(unet, cache, **kwargs)
    report = cache.report()
    cache.close()
    assert report["full_steps"] == [0, 1, 2, 4] and report["reused_steps"] == [3, 5]
    assert set(deep_runs) == {4}
    assert len(deep_runs) == (1 if branch == 2 else 2 * (2 - branch) + 2)
    quality = psnr(cached, plain)
    assert quality > 25, f"built-in model, branch {branch}: PSNR {quality:.1f} dB against full compute"
    assert torch.equal(ddim_loop(unet, None, **kwargs), plain)


class _PackagePipe:
    """What the ``DeepCache`` package's helper reads of a pipeline: the UNet, and the scheduler whose
    timesteps it finds the step index in."""

    def __init__(self, unet: torch.nn.Module, scheduler: DDIMScheduler) -> None:
        self.unet, self.scheduler = unet, scheduler


@pytest.mark.parametrize("layout", ["sd", "sdxl"])
def test_same_as_the_deepcache_package(layout: str) -> None:
    """The ``DeepCache`` package's helper (when installed; not a dependency) with its layer-level branch id
    ``3 * branch + layers_per_block`` skips the same modules: with the same schedule (no warmup, a full step
    every ``interval``), the same latent bit for bit."""
    package = pytest.importorskip("DeepCache")
    unet = tiny_unet(layout)
    config = CacheConfig(mode="deepcache", interval=3, branch=0, warmup_steps=0)
    cache = apply_deepcache(unet, config, first_step=0)
    ours = ddim_loop(unet, cache)
    assert cache.report()["full_steps"] == [0, 3, 6]
    cache.close()
    assert not torch.equal(ours, ddim_loop(unet, None))

    sched = DDIMScheduler(**scheduler_config())
    sched.set_timesteps(STEPS)
    helper = package.DeepCacheSDHelper(pipe=_PackagePipe(unet, sched))
    helper.set_params(cache_interval=3, cache_branch_id=3 * config.branch + unet.config.layers_per_block)
    helper.enable()
    x, kwargs = initial_latent(), conditioning(unet)
    with torch.no_grad():
        for t in sched.timesteps:
            noise = unet(x, t, **kwargs, return_dict=False)[0]
            x = sched.step(noise, t, x, eta=0.0, return_dict=False)[0]
    helper.disable()
    assert torch.equal(ours, x), f"max |Tessera - DeepCache package| = {float((ours - x).abs().max()):.2e}"


# ---- row bands on 2 gloo ranks --------------------------------------------------------------------------


def banded_deepcache(rank: int, world: int) -> dict[str, Any]:
    """This rank's band of the latent under patch sync mode with DeepCache interval 3, gathered to the full
    latent (every rank returns it)."""
    import torch.distributed as dist

    from pipelines.families.sd.patch import parallelize_unet_patch, unet_alignment

    unet = tiny_unet()
    group = dist.group.WORLD
    bounds = band_bounds(LATENT[2], world, align=unet_alignment(unet))
    handle = parallelize_unet_patch(unet, group, PatchConfig("sync"))
    cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=3), first_step=0)
    band = ddim_loop(unet, cache, bounds=bounds, rank=rank)
    report = cache.report()
    cache.close()
    handle.remove()
    return {"latent": gather_bands(band, group, bounds), "report": report, "bounds": bounds}


def test_row_bands_equal_one_device() -> None:
    unet = tiny_unet()
    cache = apply_deepcache(unet, CacheConfig(mode="deepcache", interval=3), first_step=0)
    one_device = ddim_loop(unet, cache)
    expected_report = cache.report()
    cache.close()

    results = run_ranks(banded_deepcache, 2, timeout=180)
    for rank, result in enumerate(results):
        assert len(result["bounds"]) == 2
        assert result["report"] == expected_report, f"rank {rank} decided differently"
        error = float((result["latent"] - one_device).abs().max())
        assert error < 1e-4, f"rank {rank}: max |bands - one device| = {error:.2e}"
    assert expected_report["reused_steps"], "the run must reuse some steps"
