"""bfloat16, as GPU farms render: each video family's frame pipeline on 2 gloo stages equals one worker, both
loading the model in bfloat16 (real tiny diffusers pipelines through ``VideoSession``; the plan picks the cut and
which stage decodes).

Found by this test: a bfloat16 Wan transformer crashed on 2 stages ("mat1 and mat2 must have the same dtype, but
got Float and BFloat16"). diffusers keeps Wan's ``scale_shift_table`` (and norms, time embedder) in float32 and
registers it first, so the ring, sized by the first parameter's dtype, received float32 hidden states for
bfloat16 layers; the ring now uses the model's compute dtype (``parallel.dtype.compute_dtype``, diffusers'
``ModelMixin.dtype``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _causal_decode_workers import causal_renders
from _parallel_dist import run_ranks
from _tiny_cogvideox import save_tiny_cogvideox
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan22 import save_tiny_wan_two_experts
from _tiny_wan_pipeline import save_tiny_wan_pipeline

from parallel.dtype import compute_dtype

SMALL = dict(prompt="red and yellow stripes", height=32, width=32, frames=24, block_frames=8, context_frames=4)
"""6 latent frames at a temporal factor of 4: 3 blocks of 2."""
FAMILIES = {
    "wan": (save_tiny_wan_pipeline, dict(SMALL, steps=3, seed=0)),
    "wan2.2-a14b": (save_tiny_wan_two_experts, dict(SMALL, steps=4, seed=1)),
    "hunyuanvideo": (save_tiny_hunyuanvideo, dict(SMALL, guidance_scale=6.0, steps=2, seed=6)),
    "cogvideox": (
        lambda path: save_tiny_cogvideox(path, "1.5", "dpm"),
        dict(SMALL, negative_prompt="blurry", guidance_scale=3.0, steps=3, seed=6),
    ),
    "ltx": (
        save_tiny_ltx,
        dict(SMALL, height=64, width=64, frames=48, block_frames=16, context_frames=8, steps=2, seed=2),
    ),
}


def test_compute_dtype_skips_what_diffusers_keeps_in_float32():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32,
    ).to(torch.bfloat16)
    model.scale_shift_table.data = model.scale_shift_table.data.float()  # as from_pretrained keeps it
    assert next(model.parameters()).dtype == torch.float32  # what the ring was sized by
    assert compute_dtype(model) == torch.bfloat16
    assert compute_dtype(torch.nn.Linear(2, 2).to(torch.bfloat16)) == torch.bfloat16  # no dtype of its own


@pytest.mark.parametrize("family", list(FAMILIES))
def test_two_stages_equal_one_worker_in_bfloat16(tmp_path, family):
    torch.set_num_threads(1)
    save, fields = FAMILIES[family]
    model_dir = str(save(tmp_path / family))
    fields = dict(fields, dtype="bfloat16", fps=8.0)
    one = run_ranks(
        causal_renders, 1, model_dir, dict(fields, parallel={"strategy": "none", "degree": 1}),
        {"one": (None, None, None)}, timeout=300,
    )[0]["one"]
    # the plan's decoding stage, and each stage forced: stage 1 decodes latents stage 0 sends it
    scenarios = {"plan": (None, None, None), "stage 0": (0, None, None), "stage 1": (1, None, None)}
    runs = run_ranks(causal_renders, 2, model_dir, dict(fields, parallel={"degree": 2}), scenarios, timeout=300)[0]
    for name, two in runs.items():
        assert one["wire_dtype"] == two["wire_dtype"] == "torch.bfloat16"
        assert sorted(two["latents"]) == sorted(one["latents"]) == [0, 1, 2]
        for block, latent in one["latents"].items():
            torch.testing.assert_close(two["latents"][block].float(), latent.float(), atol=1e-4, rtol=1e-4)
        assert [len(b) for b in two["written"]] == [len(b) for b in one["written"]], name
        for frames, expected in zip(two["written"], one["written"]):  # a block a decoder holds back: no frames
            assert not frames.size or np.abs(frames.astype(int) - expected.astype(int)).max() <= 1, name


def test_a_bfloat16_ltx_render_resumes_to_the_uninterrupted_latents(tmp_path):
    """LTX-Video's latents step in float32 under a bfloat16 transformer (the noise prediction upcast, as
    ``LTXPipeline`` does; the other families' steps return to the model's dtype); a checkpoint resume rounded them
    to bfloat16 until the state kept its dtype."""
    torch.set_num_threads(1)
    save, fields = FAMILIES["ltx"]
    model_dir = str(save(tmp_path / "ltx"))
    fields = dict(fields, dtype="bfloat16", fps=8.0, parallel={"strategy": "none", "degree": 1})
    got = run_ranks(
        causal_renders, 1, model_dir, fields, {"whole": (None, None, None), "resumed": (None, 3, None)}, timeout=300
    )[0]
    whole, resumed = got["whole"], got["resumed"]
    assert resumed["reports"][0]["tick"] == 3
    assert sorted(resumed["latents"]) == sorted(whole["latents"]) == [0, 1, 2]
    for block, latent in whole["latents"].items():
        assert latent.dtype == torch.float32
        assert torch.equal(resumed["latents"][block], latent), block
