"""The denoising loop of a text-to-image latent pipeline, one step at a time over explicit state.

A render is a chain of steps over a small state (the latent, the scheduler, the RNG), so the runtime
can drive it step by step, report progress, checkpoint it, and run it on a row band of the latent
under patch parallelism. The arithmetic follows the diffusers pipeline's own ``__call__`` exactly: what
differs between model families (how the prompt is encoded, how the denoiser is called) is asked of the
pipeline's family (``pipelines.families``), and the VAE and image processor are the pipeline's, so a render
through Tessera equals the pipeline called directly.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from pipelines.families import Conditioning, family_of
from pipelines.render_state import load_scheduler_state, scheduler_state, slice_state
from pipelines.samplers import make_scheduler

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(scaled latent, timestep) -> guided noise prediction, same shape as the latent."""


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's noise-predicting network (its family's denoiser component: a UNet, a DiT...)."""
    return family_of(pipe).denoiser_of(pipe)


@torch.no_grad()
def encode_conditioning(
    pipe,
    prompt: str,
    negative_prompt: str,
    guidance_scale: float,
    device,
    image_size=None,
    true_cfg_scale=1.0,
    options: dict[str, Any] | None = None,
) -> Conditioning:
    """The prompt (and, with guidance, the negative prompt) as the pipeline's family encodes it, without
    autograd as under the pipeline's ``__call__`` (T5 computes a few ulps differently with autograd on).
    ``true_cfg_scale`` reaches only the families whose ``guidance_scale`` is an input of the denoiser; ``options``:
    a job's ``__call__`` arguments of the family's ``encode_options`` (validation refused any other)."""
    family = family_of(pipe)
    extra = {"true_cfg_scale": true_cfg_scale} if family.true_cfg else {}
    extra.update({name: value for name, value in (options or {}).items() if value is not None})
    return family.encode(pipe, prompt, negative_prompt, guidance_scale, device, image_size, **extra)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int, int]:
    """The full latent a render of this size denoises (its family's layout)."""
    return family_of(pipe).latent_shape(pipe, height, width)


def batched_cfg_predictor(model: torch.nn.Module, cond: Conditioning) -> NoisePredictor:
    """Both guidance branches in one batch on one device, as diffusers does."""
    family, inputs = cond.family, cond.batched()

    def predict(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        model_in = torch.cat([latent] * 2) if cond.guided else latent
        noise = family.denoise(model, model_in, t, inputs, cond)
        if cond.guided:
            uncond, text = noise.chunk(2)
            noise = family.combine_guidance(uncond, text, cond.guidance_scale)
        return family.noise(model, noise)

    return predict


class DenoiseLoop:
    """One render's denoising steps over `latents` (the full latent, or one row band of it).

    The initial noise is always drawn at the full latent shape from the job's seeded generator and
    then sliced to `rows`, so every band equals the same rows of a single-device run; so is the noise a
    stochastic scheduler's step draws (``band_noise``).
    """

    def __init__(
        self,
        pipe,
        sampler: str,
        steps: int,
        seed: int,
        height: int,
        width: int,
        predict_noise: NoisePredictor,
        rows: tuple[int, int] | None = None,
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps: must be at least 1, got {steps}")
        family = family_of(pipe)
        self.device = denoiser(pipe).device
        self.scheduler = make_scheduler(family.sampler(sampler), pipe.scheduler.config)
        shape = family.latent_shape(pipe, height, width)
        family.set_timesteps(pipe, self.scheduler, steps, shape, self.device)
        self.timesteps = self.scheduler.timesteps
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # the initial latent in the dtype the family's pipeline prepares it in; the steps keep whatever dtype the
        # scheduler gives (Sana's stay float32 under bfloat16), and a resume keeps the checkpoint's
        dtype = family.latent_dtype(pipe) or denoiser(pipe).dtype
        full = randn_tensor(shape, generator=self.generator, dtype=dtype)
        # flow-matching samplers have no init_noise_sigma: their pipelines start from the unscaled noise
        full = full.to(self.device) * getattr(self.scheduler, "init_noise_sigma", 1.0)
        self.full_rows = full.shape[2]
        self.rows = rows or (0, self.full_rows)
        self.latents = full[:, :, self.rows[0] : self.rows[1]].contiguous()
        self.predict_noise = predict_noise
        self.step_kwargs = self._step_kwargs()
        banded = self.rows != (0, self.full_rows) and "generator" in self.step_kwargs
        self.band_noise = (*self.rows, self.full_rows) if banded and wrap_step_noise(self.scheduler) else None
        """(first, last, full rows) when this band's steps draw their rows of a full-shape noise draw
        (``wrap_step_noise``); None on the full latent or a scheduler without a generator."""
        self.step_index = 0

    def _step_kwargs(self) -> dict:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in accepted:
            kwargs["eta"] = 0.0
        if "generator" in accepted:
            kwargs["generator"] = self.generator
        return kwargs

    @property
    def done(self) -> bool:
        return self.step_index >= len(self.timesteps)

    def state_dict(self) -> dict:
        """This band's state: latent, step index, scheduler fields, RNG (see pipelines.render_state)."""
        return {
            "step_index": self.step_index,
            "rows": list(self.rows),
            "latents": self.latents.detach().cpu().clone(),
            "scheduler": scheduler_state(self.scheduler),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, full_state: dict) -> None:
        """Continue from a full-image state (any band count took it), keeping only this loop's rows."""
        state = slice_state(full_state, self.rows)
        load_scheduler_state(self.scheduler, state["scheduler"], self.device)
        self.latents = state["latents"].to(device=self.device)  # in the dtype it stepped in, not rounded
        self.generator.set_state(state["generator"])
        self.step_index = state["step_index"]

    @torch.no_grad()
    def step(self) -> int:
        """Advance one denoising step; returns the number of steps done."""
        if self.done:
            raise RuntimeError("the denoising loop has already run all its steps")
        t = self.timesteps[self.step_index]
        scale = getattr(self.scheduler, "scale_model_input", None)  # flow-matching samplers have none
        model_in = scale(self.latents, t) if scale is not None else self.latents
        noise = self.predict_noise(model_in, t)
        if self.band_noise is None:
            self.latents = self.scheduler.step(noise, t, self.latents, **self.step_kwargs, return_dict=False)[0]
        else:
            with band_step_noise(*self.band_noise):
                self.latents = self.scheduler.step(noise, t, self.latents, **self.step_kwargs, return_dict=False)[0]
        self.step_index += 1
        return self.step_index


_BAND_ROWS: ContextVar[tuple[int, int, int] | None] = ContextVar("band_rows", default=None)
"""(first, last, full rows) of the band whose scheduler step is drawing noise now; None outside one."""
_WRAPPED: set[str] = set()
_WRAP_LOCK = threading.Lock()


def wrap_step_noise(scheduler: Any) -> bool:
    """Let ``band_step_noise`` reach the noise ``scheduler``'s ``step`` draws; False when its module has no
    ``randn_tensor`` to wrap. A stochastic scheduler (Euler ancestral, LCM, DDPM) draws fresh noise in ``step`` at
    the sample's shape through its module's ``randn_tensor`` and takes none from outside (only DDIM's
    ``variance_noise``), so that name is wrapped once per module, for good: the wrapper reads the stepping band from
    a context variable, so steps of other bands, threads or schedulers are not touched, and outside a band it is the
    function it wraps."""
    module_name = type(scheduler).__module__
    module = sys.modules.get(module_name)
    if module is None or not callable(getattr(module, "randn_tensor", None)):
        return False
    with _WRAP_LOCK:
        if module_name not in _WRAPPED:
            draw = module.randn_tensor

            def band_rows(shape, *args, **kwargs):
                band = _BAND_ROWS.get()
                shape = tuple(shape)
                if band is None or len(shape) < 3 or shape[2] != band[1] - band[0]:
                    return draw(shape, *args, **kwargs)
                return draw((*shape[:2], band[2], *shape[3:]), *args, **kwargs)[:, :, band[0] : band[1]]

            module.randn_tensor = band_rows
            _WRAPPED.add(module_name)
    return True


@contextmanager
def band_step_noise(first: int, last: int, full_rows: int) -> Iterator[None]:
    """Inside it, the noise a wrapped scheduler (``wrap_step_noise``) draws in ``step`` is rows ``first:last`` of a
    draw at ``full_rows`` rows: the band's rows of one worker's draw."""
    token = _BAND_ROWS.set((first, last, full_rows))
    try:
        yield
    finally:
        _BAND_ROWS.reset(token)


TILED_DECODE_ABOVE = 1024 * 1024
"""Images with more pixels than this decode tile by tile, so 2048x2048 fits in a CPU worker's memory."""


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, tiled: bool | None = None) -> np.ndarray:
    """Float image in [0, 1], [height, width, 3]: the denoised latent as the pipeline's family decodes it."""
    return family_of(pipe).decode(pipe, latents, tiled)


@torch.no_grad()
def vae_decode(pipe, latents: torch.Tensor, tiled: bool | None = None) -> np.ndarray:
    """The VAE's latent (already unscaled by the family) through the pipeline's VAE and image processor.

    `tiled=None` tiles large images only. Tiling is diffusers' own (overlapping tiles, blended seams);
    it normalises per tile, so it is close to, not equal to, the untiled decode.
    """
    vae = pipe.vae
    pixels = latents.shape[-2] * latents.shape[-1] * pipe.vae_scale_factor**2
    use_tiles = pixels > TILED_DECODE_ABOVE if tiled is None else tiled
    if use_tiles:
        vae.enable_tiling()
    try:
        image = vae.decode(latents.to(device=vae.device, dtype=vae.dtype), return_dict=False)[0]
    finally:
        if use_tiles:
            vae.disable_tiling()
    return pipe.image_processor.postprocess(image, output_type="np", do_denormalize=[True])[0]
