"""What a worker needs to run its part of one render: plain data, built by the cluster from a job spec."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderTask:
    model_path: str
    """Local diffusers pipeline directory."""
    dtype: str
    """"float32", "float16" or "bfloat16"."""
    prompt: str
    """Text prompt."""
    negative_prompt: str
    """Negative prompt ("" for none)."""
    height: int
    """Image height in pixels."""
    width: int
    """Image width in pixels."""
    steps: int
    """Denoising steps."""
    seed: int
    """Seed of the generator that draws the initial noise."""
    guidance_scale: float
    """Classifier-free guidance weight (off at <= 1)."""
    sampler: str
    """"ddim", "euler" or "dpm++"."""
    strategy: str = "none"
    """"none" (whole latent on one worker) or "patch" (one row band per worker)."""
    mode: str = "sync"
    """Patch exchange: "sync" (exact) or "displaced" (previous step's activations)."""
    warmup_steps: int = 0
    """Synchronous steps before displaced mode starts."""
    stale_dtype: str | None = None
    """Displaced mode: precision the stale activations travel and wait in (None: the model's dtype)."""
    kv_source: str = "kv"
    """What self-attention bands exchange: "kv" (keys and values) or "input" (attention inputs)."""
    cfg: bool = False
    """CFG parallel: the two guidance branches on the two halves of the group."""
