"""What a worker needs to run its stage of one video render: plain data, built from a VideoSpec."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoTask:
    model_path: str
    """Local video pipeline directory."""
    dtype: str
    """"float32", "float16" or "bfloat16"."""
    prompt: str
    """Text prompt."""
    height: int
    """Frame height in pixels."""
    width: int
    """Frame width in pixels."""
    frames: int
    """Video frames (a multiple of block_frames: the spec has rounded it)."""
    block_frames: int
    """Frames per frame block."""
    context_frames: int
    """Neighbour frames each block attends to through the feature cache."""
    steps: int
    """Denoising steps per block."""
    seed: int
    """Seed of the shared noise template."""
    fps: float
    """Frame rate written into the MP4."""
    video_path: str
    """Where stage 0 streams the MP4 (published by rename when complete)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance weight; above 1 both branches run through the stages."""
    negative_prompt: str = ""
    """Negative prompt of the unconditional branch ("" for none), used when guidance_scale > 1."""
    block_stride: int = 1
    """Ticks between consecutive frame blocks entering the queue (1: DualParal's queue)."""
