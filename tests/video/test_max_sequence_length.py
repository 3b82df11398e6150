"""A video job's ``max_sequence_length`` (the pipelines' own argument: the prompt tokens the text encoder's output is
padded or cut to; diffusers' own video tests call every pipeline with 16): one block on one worker at 16 tokens equals
the family's pipeline called with ``max_sequence_length=16`` from the same initial latents, for Wan, CogVideoX 1.5,
LTX-Video and HunyuanVideo; validation refuses it, naming the field, for the built-in video model and for a CogVideoX
transformer whose position table fixes the prompt's length."""

from __future__ import annotations

import pytest
import torch
from _diffusers_reference import one_block_reference
from _tiny_cogvideox import TEXT_TOKENS, save_tiny_cogvideox
from _tiny_hunyuanvideo import save_tiny_hunyuanvideo
from _tiny_ltx import save_tiny_ltx
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

PROMPT, SEED, STEPS, TOKENS = "red and yellow stripes", 3, 2, 16
CASES = {  # family: (builder, size, latent frames, Tessera's frames, guidance_scale: None leaves the embedded default)
    "wan": (save_tiny_wan_pipeline, 32, 2, 8, 1.0),
    "cogvideox-1.5": (lambda path: save_tiny_cogvideox(path, "1.5"), 32, 2, 8, 1.0),
    "ltx": (save_tiny_ltx, 32, 2, 16, 1.0),
    "hunyuanvideo": (save_tiny_hunyuanvideo, 32, 3, 12, None),
}


@torch.no_grad()
def pipeline_latents(model_dir: str, latent_frames: int, size: int, guidance: float | None, **call) -> torch.Tensor:
    """The family's diffusers pipeline called directly from Tessera's initial latents, its final latents
    [1, C, F, h, w] (each pipeline's own layout and packing undone)."""
    reference, pipe, initial = one_block_reference(model_dir, latent_frames, size, SEED)
    kind = type(reference).__name__
    args = dict(prompt=PROMPT, height=size, width=size, num_frames=1 + pipe.temporal_factor * (latent_frames - 1),
                num_inference_steps=STEPS, output_type="latent", **call)
    if guidance is not None:
        args["guidance_scale"] = guidance
    if kind == "CogVideoXPipeline":  # [B, F, C, h, w]
        return reference(latents=initial.transpose(1, 2), **args).frames.transpose(1, 2)
    if kind == "LTXPipeline":  # packed tokens
        packed = reference(latents=reference._pack_latents(initial), return_dict=False, **args)[0]
        return reference._unpack_latents(packed, latent_frames, *initial.shape[3:])
    if kind == "HunyuanVideoPipeline":
        return reference(latents=initial.clone(), **args).frames
    return reference(latents=initial, return_dict=False, **args)[0]


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_job_at_16_tokens_equals_the_pipeline_called_so(family, tmp_path):
    torch.set_num_threads(1)
    builder, size, latent_frames, frames, guidance = CASES[family]
    model_dir = str(builder(tmp_path / family))
    task = dict(prompt=PROMPT, height=size, width=size, frames=frames, block_frames=frames, context_frames=0,
                steps=STEPS, seed=SEED, max_sequence_length=TOKENS)
    if guidance is not None:
        task["guidance_scale"] = guidance
    spec = VideoSpec.from_dict(dict(task, model=model_dir, parallel={"strategy": "none", "degree": 1}))
    assert spec.max_sequence_length == TOKENS  # accepted at submit
    got = render_session(0, 1, model_dir, str(tmp_path), task)["latents"][0]
    expected = pipeline_latents(model_dir, latent_frames, size, guidance, max_sequence_length=TOKENS)
    diff = (got - expected).abs().max().item()
    print(f"{family} at max_sequence_length={TOKENS}, one block vs its pipeline: max abs diff {diff:.2e}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    if family == "wan":  # no attention mask over the padding: the length changes the video
        default = render_session(0, 1, model_dir, str(tmp_path), {k: v for k, v in task.items() if k != "max_sequence_length"})
        assert not torch.allclose(default["latents"][0], expected, atol=1e-3)


def test_refusals(tmp_path):
    base = dict(prompt=PROMPT, height=32, width=32, frames=8, block_frames=8, context_frames=0, steps=2,
                parallel={"strategy": "none", "degree": 1})
    table = str(save_tiny_cogvideox(tmp_path / "cogvideox-1.0", "1.0"))  # a sincos table for the fixture's tokens
    assert VideoSpec.from_dict(dict(base, model=table, max_sequence_length=TEXT_TOKENS)).max_sequence_length == TEXT_TOKENS
    wan = str(save_tiny_wan_pipeline(tmp_path / "wan"))
    for model, tokens, field in (
        (table, TOKENS, "max_sequence_length"),
        ("builtin-video", TOKENS, "max_sequence_length"),
        (wan, 0, "max_sequence_length"),
        (wan, "16", "max_sequence_length"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(base, model=model, max_sequence_length=tokens))
        assert err.value.field == field, (model, tokens)
