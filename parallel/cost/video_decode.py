"""What a video's VAE decode adds to a plan's render: one block's decode priced from its FLOPs, and where each
strategy runs the decodes.

Until this module the video plans (``parallel.cost.video``) priced the denoising only, yet the decode is a fifth of
a block-wise render on CPU (Wan's tiny layout at 256 frames: 6.3 of 31 CPU seconds, BENCHMARKS.md "Video strategies
on 2 CPU workers") and the strategies place it differently:

- one worker decodes every block itself;
- the frame pipeline decodes each finished block once, between ticks: a VAE whose frames decode apart (the built-in
  model's per-frame VAE) gives every stage a share of the block, a causal VAE decodes whole blocks on the one stage
  that lengthens the render least, which the stage balance gives fewer layers (``parallel.frames.partition``);
- a guidance branch per worker (``parallel.cfg`` on the frame pipeline) keeps the two workers in step every work
  item: the partner decodes half of a per-frame VAE's block, a causal VAE's block decodes on rank 0 while the
  partner waits; with a pipeline of stages per branch, the conditional branch's stages decode as they would alone
  and the unconditional branch waits;
- the whole-video strategies (sequence, patch) decode their one block on rank 0 after the last step, or with a
  guidance branch per worker on 2 workers and a per-frame VAE, half of it on each.

The decode of ``frames`` latent frames is profiled on the meta device (``profile_module``: FLOPs and ops, no
weights) and priced as any forward is (``compute_seconds``). A causal VAE's block is profiled as the video's first
block (Wan's decodes ``1 + 4 (F - 1)`` frames there, ``4 F`` later: within a few per cent); a block-wise decode
takes the frames some families decode again with it (``ModelSpec.decode_extra_frames``: LTX-Video's window of
context both ways, at the family's default; HunyuanVideo's overlap of its temporal tiles), a whole-video decode
none.
"""

from __future__ import annotations

import json
import math

import torch

from parallel.cost.models import ModelSpec, build_vae_decoder_meta
from parallel.cost.predict import compute_seconds
from parallel.cost.profile import profile_module
from parallel.cost.specs import load_specs
from parallel.frames.schedule import tick_profile

_FLOPS: dict[tuple, tuple[int, int] | None] = {}
"""(FLOPs, ops) of a block's decode, by VAE and shape: the scheduler asks again on every poll of a queued job."""


class _Decode(torch.nn.Module):
    """The VAE's ``decode`` as a module's forward, what ``profile_module`` hooks."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if getattr(self.vae.config, "timestep_conditioning", False):  # LTX-Video 0.9.1's decoder takes a timestep
            timestep = torch.zeros(latent.shape[0], device=latent.device, dtype=latent.dtype)
            return self.vae.decode(latent, timestep, return_dict=False)[0]
        return self.vae.decode(latent, return_dict=False)[0]


def vae_latent_channels(spec: ModelSpec) -> int:
    """The latent channels the VAE decodes: its own (``latent_channels``, Wan's ``z_dim``), not the transformer's
    input (an image-to-video transformer takes more: Wan I2V's 36 against 16)."""
    config = spec.vae_config or {}
    return int(config.get("latent_channels", config.get("z_dim", spec.latent_channels)))


def decode_flops(spec: ModelSpec, height: int, width: int, frames: int, dtype: str) -> tuple[int, int] | None:
    """(FLOPs, ops) of decoding ``frames`` latent frames at this size (None: the spec names no VAE, or its decode
    cannot run on meta). A per-frame VAE decodes them as a batch of images."""
    if spec.vae_config is None:
        return None
    key = (spec.vae_class, json.dumps(spec.vae_config, sort_keys=True, default=str), spec.latent_channels,
           spec.vae_scale, spec.decode_by_frames, height, width, frames, dtype)
    if key not in _FLOPS:
        if len(_FLOPS) > 64:
            _FLOPS.clear()
        vae = build_vae_decoder_meta(spec, getattr(torch, dtype))
        rows, columns = height // spec.vae_scale, width // spec.vae_scale
        channels = vae_latent_channels(spec)
        shape = (frames, channels, rows, columns) if spec.decode_by_frames else (1, channels, frames, rows, columns)
        latent = torch.empty(shape, device="meta", dtype=getattr(torch, dtype))
        try:
            profile = profile_module(_Decode(vae), (latent,), {})
            _FLOPS[key] = (profile.flops, profile.ops)
        except (RuntimeError, NotImplementedError, TypeError, ValueError):  # a decode meta tensors cannot run
            _FLOPS[key] = None
    return _FLOPS[key]


def block_decode_s(
    spec: ModelSpec, height: int, width: int, frames: int, device: str, corun: bool, specs_yaml: str | None = None
) -> float:
    """Seconds to decode one block of ``frames`` latent frames on one worker of ``device`` (``corun``: beside
    other busy workers); 0 when the decode cannot be priced."""
    dev = load_specs(*([specs_yaml] if specs_yaml else [])).device(device)
    counted = decode_flops(spec, height, width, frames, dev.dtype)
    if counted is None:
        return 0.0
    flops, ops = counted
    return compute_seconds(flops / dev.decode_efficiency, ops, dev, corun)


def pipeline_decode_s(
    item_s: float, block_s: float, blocks: int, steps: int, stages: int, by_frames: bool, stride: int = 1
) -> float:
    """Seconds the decodes add to a frame pipeline of ``stages`` whose work item takes ``item_s`` on one worker, a
    block's decode ``block_s``: the continuous form of the stage balance (``partition.stage_plan``), every tick as
    long as its slowest stage (``schedule.tick_profile``). Frames that decode apart are shared evenly; a causal
    VAE's whole blocks go to one stage, whose share of the layers ``x`` is searched for the shortest render."""
    if block_s <= 0.0:
        return 0.0
    profile = tick_profile(blocks, steps, stride)

    def render(loads: list[float], decodes: list[float]) -> float:
        return sum(max(n * load + d * dec for load, dec in zip(loads, decodes)) for n, d in profile)

    even = [item_s / stages] * stages
    bare = render(even, [0.0] * stages)
    if by_frames or stages == 1:
        return render(even, [block_s / stages] * stages) - bare
    best = math.inf
    for i in range(101):  # the decoding stage's share of the layers, 0 to its even share
        x = i / 100 / stages
        rest = (1.0 - x) / (stages - 1)
        loads = [x * item_s] + [rest * item_s] * (stages - 1)
        best = min(best, render(loads, [block_s] + [0.0] * (stages - 1)))
    return best - bare
