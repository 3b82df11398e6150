"""The denoising loop of a text-to-image latent pipeline, one step at a time over explicit state.

A render is a chain of steps over a small state (the latent, the scheduler, the RNG), so the runtime
can drive it step by step, report progress, checkpoint it, and run it on a row band of the latent
under patch parallelism. The arithmetic follows diffusers' StableDiffusionPipeline.__call__ exactly,
calling the pipeline's own prompt encoding, step kwargs, VAE and image processor, so a render through
Tessera equals the pipeline called directly.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from pipelines.render_state import load_scheduler_state, scheduler_state, slice_state
from pipelines.samplers import make_scheduler

NoisePredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(scaled latent, timestep) -> guided noise prediction, same shape as the latent."""


@dataclass
class Conditioning:
    prompt_embeds: torch.Tensor
    """Text embeddings of the prompt, [1, tokens, width]."""
    negative_embeds: torch.Tensor | None
    """Embeddings of the negative prompt; None without classifier-free guidance."""
    guidance_scale: float
    """Classifier-free guidance weight; guidance is off at 1.0 or below, as in diffusers."""
    prompt_mask: torch.Tensor | None = None
    """The prompt's token mask, for transformers that take one (PixArt's T5 tokens); None for UNets."""
    negative_mask: torch.Tensor | None = None
    """The negative prompt's token mask, when guided and the denoiser takes masks."""
    image_size: tuple[int, int] | None = None
    """(height, width) in pixels, for transformers conditioned on resolution (PixArt at 1024)."""

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def batched(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeddings, mask) of both branches in one batch (negative first), as diffusers batches them."""
        if not self.guided:
            return self.prompt_embeds, self.prompt_mask
        mask = None if self.prompt_mask is None else torch.cat([self.negative_mask, self.prompt_mask])
        return torch.cat([self.negative_embeds, self.prompt_embeds]), mask

    def branch(self, conditional: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeddings, mask) of one branch (CFG parallel runs the two on different workers)."""
        if conditional:
            return self.prompt_embeds, self.prompt_mask
        return self.negative_embeds, self.negative_mask


def denoiser(pipe) -> torch.nn.Module:
    """The pipeline's noise-predicting network: its UNet, or its DiT-style transformer (PixArt)."""
    model = getattr(pipe, "unet", None)
    return model if model is not None else pipe.transformer


def is_transformer(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith("Transformer2DModel")


def encode_conditioning(
    pipe, prompt: str, negative_prompt: str, guidance_scale: float, device, image_size=None
) -> Conditioning:
    guided = guidance_scale > 1.0
    if is_transformer(denoiser(pipe)):  # PixArt: T5 embeddings with their attention masks
        positive, mask, negative, negative_mask = pipe.encode_prompt(
            prompt, guided, negative_prompt=negative_prompt, device=device
        )
        if not guided:
            negative = negative_mask = None
        return Conditioning(positive, negative, guidance_scale, mask, negative_mask, image_size)
    positive, negative = pipe.encode_prompt(prompt, device, 1, guided, negative_prompt or None)
    return Conditioning(positive, negative if guided else None, guidance_scale, image_size=image_size)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int, int]:
    factor = pipe.vae_scale_factor
    if height % factor or width % factor:
        raise ValueError(f"height/width: {height}x{width} must be multiples of the VAE factor {factor}")
    return (1, denoiser(pipe).config.in_channels, height // factor, width // factor)


def call_denoiser(
    model: torch.nn.Module,
    latent: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    mask: torch.Tensor | None,
    image_size: tuple[int, int] | None,
) -> torch.Tensor:
    """One forward of a UNet or a PixArt-style transformer, called as its diffusers pipeline calls it."""
    if not is_transformer(model):
        return model(latent, t, encoder_hidden_states=embeds, return_dict=False)[0]
    batch = latent.shape[0]
    timestep = (t[None] if t.dim() == 0 else t).to(latent.device).expand(batch)
    added = {"resolution": None, "aspect_ratio": None}
    if model.config.sample_size == 128 and image_size is not None:  # PixArt-alpha 1024's micro-conditions
        height, width = image_size
        added = {
            "resolution": torch.tensor([height, width]).repeat(batch, 1).to(embeds.dtype),
            "aspect_ratio": torch.tensor([float(height / width)]).repeat(batch, 1).to(embeds.dtype),
        }
    return model(
        latent,
        encoder_hidden_states=embeds,
        encoder_attention_mask=mask,
        timestep=timestep,
        added_cond_kwargs=added,
        return_dict=False,
    )[0]


def keep_noise_channels(model: torch.nn.Module, noise: torch.Tensor) -> torch.Tensor:
    """A transformer with learned sigma predicts noise and variance: keep the noise half."""
    if is_transformer(model) and model.config.out_channels // 2 == model.config.in_channels:
        return noise.chunk(2, dim=1)[0]
    return noise


def batched_cfg_predictor(model: torch.nn.Module, cond: Conditioning) -> NoisePredictor:
    """Both guidance branches in one batch on one device, as diffusers does."""
    embeds, mask = cond.batched()

    def predict(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        model_in = torch.cat([latent] * 2) if cond.guided else latent
        noise = call_denoiser(model, model_in, t, embeds, mask, cond.image_size)
        if cond.guided:
            uncond, text = noise.chunk(2)
            noise = uncond + cond.guidance_scale * (text - uncond)
        return keep_noise_channels(model, noise)

    return predict


class DenoiseLoop:
    """One render's denoising steps over `latents` (the full latent, or one row band of it).

    The initial noise is always drawn at the full latent shape from the job's seeded generator and
    then sliced to `rows`, so every band equals the same rows of a single-device run.
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
        self.device = denoiser(pipe).device
        self.dtype = denoiser(pipe).dtype
        self.scheduler = make_scheduler(sampler, pipe.scheduler.config)
        self.scheduler.set_timesteps(steps, device=self.device)
        self.timesteps = self.scheduler.timesteps
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        full = randn_tensor(latent_shape(pipe, height, width), generator=self.generator, dtype=self.dtype)
        full = full.to(self.device) * self.scheduler.init_noise_sigma
        self.rows = rows or (0, full.shape[2])
        self.latents = full[:, :, self.rows[0] : self.rows[1]].contiguous()
        self.predict_noise = predict_noise
        self.step_kwargs = self._step_kwargs()
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
        self.latents = state["latents"].to(device=self.device, dtype=self.dtype)
        self.generator.set_state(state["generator"])
        self.step_index = state["step_index"]

    @torch.no_grad()
    def step(self) -> int:
        """Advance one denoising step; returns the number of steps done."""
        if self.done:
            raise RuntimeError("the denoising loop has already run all its steps")
        t = self.timesteps[self.step_index]
        model_in = self.scheduler.scale_model_input(self.latents, t)
        noise = self.predict_noise(model_in, t)
        self.latents = self.scheduler.step(noise, t, self.latents, **self.step_kwargs, return_dict=False)[0]
        self.step_index += 1
        return self.step_index


TILED_DECODE_ABOVE = 1024 * 1024
"""Images with more pixels than this decode tile by tile, so 2048x2048 fits in a CPU worker's memory."""


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, tiled: bool | None = None) -> np.ndarray:
    """Float image in [0, 1], [height, width, 3], through the pipeline's VAE and image processor.

    `tiled=None` tiles large images only. Tiling is diffusers' own (overlapping tiles, blended seams);
    it normalises per tile, so it is close to, not equal to, the untiled decode.
    """
    vae = pipe.vae
    pixels = latents.shape[-2] * latents.shape[-1] * pipe.vae_scale_factor**2
    use_tiles = pixels > TILED_DECODE_ABOVE if tiled is None else tiled
    if use_tiles:
        vae.enable_tiling()
    try:
        latents = latents.to(device=vae.device, dtype=vae.dtype)
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    finally:
        if use_tiles:
            vae.disable_tiling()
    return pipe.image_processor.postprocess(image, output_type="np", do_denormalize=[True])[0]
