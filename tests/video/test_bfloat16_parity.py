"""One block on one worker in bfloat16 (through ``VideoSession``, as a worker renders) against the family's diffusers
pipeline loaded in bfloat16, from the same initial latents: bit for bit. Under a half-precision model each pipeline
keeps its own dtypes, and a family must follow them (``latent_dtype``, the adapters' ``output_dtype``):

- Wan, HunyuanVideo, LTX-Video prepare their latents in float32; LTX-Video and CogVideoX upcast the noise prediction
  to float32 before guidance and the step (before the families said so: LTX's latents stepped in bfloat16, max abs
  diff 0.016-0.026 after 4 steps; CogVideoX's guidance was combined in bfloat16, 0.039-0.051);
- HunyuanVideo passes its timestep in the latents' dtype (``t.to(latents.dtype)``: bfloat16 after the first step;
  before, float32: 0.0625 after 3 steps);
- LTX-Video under guidance feeds ``proj_in`` a contiguous batch (its ``torch.cat`` of packed latents): CPU bfloat16
  GEMMs round by memory layout (0.0227 after 4 steps before).
- Wan 2.1 image-to-video under guidance runs each block's cross-attention once per branch, as the pipeline calls the
  model: batched, diffusers' processor slices the image tokens off a batch of 2 into a strided GEMM input (0.0263
  after 3 steps before).

Wan (2.1 and 2.2's two experts) matched already. Bit for bit holds because both sides run the same kernels on the
same inputs; a difference here means a family's call path left diffusers'."""

from __future__ import annotations

import pytest
import torch
from _bf16_cases import CASES


@pytest.mark.parametrize("name", list(CASES))
def test_one_block_equals_the_diffusers_pipeline(tmp_path, name):
    got, expected = CASES[name](tmp_path, "cpu")
    diff = (got.float() - expected.float()).abs().max().item()
    print(f"{name} bf16, one block vs the diffusers pipeline: max abs diff {diff:.3g} ({got.dtype}, {expected.dtype})")
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected), f"{name}: max abs diff {diff:.3g}"
