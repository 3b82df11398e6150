"""Pick the attention kernel: xformers on CUDA when it imports (the `gpu` extra), torch SDPA otherwise.

xformers imports on CPU too but has no CPU kernels, so it is never enabled there. A pipeline object without
diffusers' switch (a family's own, such as the video pipeline, whose frame pipeline installs its own
attention processors) keeps SDPA.
"""

from __future__ import annotations


def enable_fast_attention(pipe, device: str) -> str:
    """Switch the pipeline's attention to xformers where that helps; returns the kernel in use."""
    if not device.startswith("cuda") or not hasattr(pipe, "enable_xformers_memory_efficient_attention"):
        return "sdpa"
    try:
        import xformers  # noqa: F401
    except ImportError:
        return "sdpa"
    pipe.enable_xformers_memory_efficient_attention()
    return "xformers"
