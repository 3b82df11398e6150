"""A tiny diffusers FluxTransformer2DModel (1 double + 1 single block), called as FluxPipeline calls it.

The latent is packed into 2x2 patches with the pipeline's own ``_pack_latents`` and positioned with its
``_prepare_latent_image_ids``; sizes are read from the model's config. True CFG runs the two branches as
two forwards, as ``FluxPipeline`` does with ``true_cfg_scale``.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from pipelines.families.base import Conditioning, ModelFamily

LATENT = (1, 4, 12, 8)
"""(batch, channels, rows, columns) of the unpacked latent: 6 x 4 = 24 tokens of 2x2 patches."""
TEXT_TOKENS = 8
STEPS = 3
GUIDANCE = 3.5


def tiny_flux() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=LATENT[1] * 4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=32,
        pooled_projection_dim=24,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


def prompts(model: FluxTransformer2DModel) -> dict[str, dict[str, torch.Tensor]]:
    """Conditional and unconditional text inputs (random embeddings of the config's widths)."""
    g = torch.Generator().manual_seed(3)
    out = {}
    for branch in ("cond", "uncond"):
        out[branch] = {
            "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, model.config.joint_attention_dim, generator=g),
            "pooled_projections": torch.randn(1, model.config.pooled_projection_dim, generator=g),
        }
    return out


def initial_latent() -> torch.Tensor:
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(5))


def flux_forward(model: FluxTransformer2DModel, latent: torch.Tensor, t: torch.Tensor, text: dict) -> torch.Tensor:
    """The transformer on an unpacked latent, as FluxPipeline's __call__ calls it; the output unpacked."""
    b, c, h, w = latent.shape
    packed = FluxPipeline._pack_latents(latent, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latent.device, latent.dtype)
    txt_ids = torch.zeros(text["encoder_hidden_states"].shape[1], 3)
    out = model(
        hidden_states=packed,
        timestep=(t / 1000).expand(b),
        img_ids=img_ids,
        txt_ids=txt_ids,
        return_dict=False,
        **text,
    )[0]
    out = out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return out.reshape(b, c, h, w)


def denoise(model: FluxTransformer2DModel, guide) -> torch.Tensor:
    """A flow-matching Euler loop of STEPS steps; ``guide(latent, t) -> guided noise``."""
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(STEPS)
    latent = initial_latent()
    with torch.no_grad():
        for t in scheduler.timesteps:
            latent = scheduler.step(guide(latent, t), t, latent, return_dict=False)[0]
    return latent


def guided_on_one_device(model: FluxTransformer2DModel):
    """Both branches on this device, combined as FluxPipeline's true CFG does."""
    texts = prompts(model)

    def guide(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = flux_forward(model, latent, t, texts["cond"])
        uncond = flux_forward(model, latent, t, texts["uncond"])
        return uncond + GUIDANCE * (cond - uncond)

    return guide


def reference() -> dict[str, torch.Tensor]:
    """One device: a forward of each branch, and the guided loop."""
    model = tiny_flux()
    texts = prompts(model)
    with torch.no_grad():
        out = {branch: flux_forward(model, initial_latent(), torch.tensor(700.0), texts[branch]) for branch in texts}
    out["loop"] = denoise(model, guided_on_one_device(model))
    return out


class FluxStandInFamily(ModelFamily):
    """What a render session's strategy set-up asks of a family, for the tiny Flux transformer: no image
    family in main has a context-parallel plan yet, so ``runtime.jobs.image_sequence`` is tested with this one."""

    name = "flux-stand-in"
    denoiser = "transformer"
    strategies = ("none", "sequence")

    def denoise(self, model, latent, t, inputs, cond):
        return flux_forward(model, latent, t, inputs)


def stand_in_conditioning(model: FluxTransformer2DModel) -> Conditioning:
    texts = prompts(model)
    return Conditioning(FluxStandInFamily(), texts["cond"], texts["uncond"], GUIDANCE)
