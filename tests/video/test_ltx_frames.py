"""LTX-Video (a tiny LTXPipeline directory built offline): the prompt as diffusers encodes it, the transformer
cut into the frame pipeline's pieces equal to its own forward, the neighbours' rotary positions, the family's
checks at submit."""

from __future__ import annotations

import pytest
import torch
from _tiny_ltx import LATENT_CHANNELS, save_tiny_ltx, tiny_ltx_transformer

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from pipelines.families import family_for_dir
from pipelines.families.ltx.frames import LTX_ROPE_SCALE, LTXFrameAdapter
from pipelines.families.ltx.loading import load_ltx_pipeline


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx")


@pytest.fixture(scope="module")
def pipe(ltx_dir):
    return load_ltx_pipeline(ltx_dir)


def _pieces(model, latent, t, text, context_frames):
    adapter = LTXFrameAdapter(model, tuple(latent.shape[1:]), context_frames)
    try:
        cond = adapter.conditions(t, text)
        adapter.begin_block(0)
        hidden = adapter.embed(latent)
        for layer in range(adapter.num_layers):
            hidden = adapter.run_layer(layer, hidden, cond)
        return adapter.head(hidden, cond)
    finally:
        adapter.remove()


def test_family_and_prompt_as_diffusers_encodes_it(ltx_dir, pipe):
    from diffusers import LTXPipeline

    assert family_for_dir(ltx_dir).name == "ltx"
    assert (pipe.temporal_factor, pipe.vae_scale_factor, pipe.latent_shape(64, 96)) == (
        8,
        32,
        (LATENT_CHANNELS, 2, 3),
    )
    assert pipe.video_frames(3) == 17 and pipe.latent_frames(24) == 3
    reference = LTXPipeline.from_pretrained(ltx_dir, local_files_only=True, use_safetensors=True)
    embeds, mask, _, _ = reference.encode_prompt(prompt="red circle", do_classifier_free_guidance=False)
    assert embeds.shape[1] == 128  # LTXPipeline.__call__'s length, over the tokenizer's own limit (TEXT_TOKENS)
    got = pipe.encode_prompt("red circle")
    torch.testing.assert_close(got["prompt_embeds"], embeds)
    assert torch.equal(got["prompt_attention_mask"], mask) and not mask.all()  # padding is masked


@pytest.mark.parametrize("context_frames", [0, 2])
@torch.no_grad()
def test_pieces_equal_transformer_forward(pipe, context_frames):
    """Both guidance branches batched, the prompt's padding masked: the pieces are the model's forward."""
    from diffusers import LTXPipeline

    torch.set_num_threads(1)
    model = pipe.transformer
    text, negative, _ = pipe.conditioning("red circle", "blurry", 3.0)
    both = {key: torch.cat([negative[key], value]) for key, value in text.items()}
    frames, height, width = 3, 2, 3
    latent = torch.randn(
        2, LATENT_CHANNELS, frames, height, width, generator=torch.Generator().manual_seed(0)
    )
    t = torch.tensor([640.0])
    expected = model(
        hidden_states=LTXPipeline._pack_latents(latent),
        encoder_hidden_states=both["prompt_embeds"],
        timestep=t.expand(2),
        encoder_attention_mask=both["prompt_attention_mask"],
        num_frames=frames,
        height=height,
        width=width,
        rope_interpolation_scale=LTX_ROPE_SCALE,
        return_dict=False,
    )[0]
    expected = LTXPipeline._unpack_latents(expected, frames, height, width)
    got = _pieces(model, latent, t, both, context_frames)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    print(
        f"LTX pieces vs transformer(...), context {context_frames}: max abs diff {(got - expected).abs().max():.2e}"
    )
    # remove() restored diffusers' processor: the model gives the same output again
    again = model(
        hidden_states=LTXPipeline._pack_latents(latent),
        encoder_hidden_states=both["prompt_embeds"],
        timestep=t.expand(2),
        encoder_attention_mask=both["prompt_attention_mask"],
        num_frames=frames,
        height=height,
        width=width,
        rope_interpolation_scale=LTX_ROPE_SCALE,
        return_dict=False,
    )[0]
    torch.testing.assert_close(LTXPipeline._unpack_latents(again, frames, height, width), expected)


@torch.no_grad()
def test_neighbour_positions_are_the_true_offsets():
    """A block's query against its previous block's tail and its next block's head scores as in a video of the
    three blocks (the rotary embedding is relative: only offsets count), up to the rounding of LTX's float32 angles
    (thousands of radians at its highest frequencies)."""
    model = tiny_ltx_transformer(layers=1)
    frames, height, width, context = 2, 2, 2, 2
    adapter = LTXFrameAdapter(model, (LATENT_CHANNELS, frames, height, width), context)
    adapter.remove()
    tpf = height * width
    probe = torch.empty(1, 1)
    whole = model.rope(probe, 3 * frames, height, width, rope_interpolation_scale=LTX_ROPE_SCALE)
    dim = whole[0].shape[-1]
    q, k = torch.randn(1, frames * tpf, dim), torch.randn(1, context * tpf, dim)

    def scores(rope_q, rope_k):
        from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

        return apply_rotary_emb(q, rope_q) @ apply_rotary_emb(k, rope_k).transpose(1, 2)

    def cut(rope, start, end):
        return rope[0][:, start * tpf : end * tpf], rope[1][:, start * tpf : end * tpf]

    own = cut(whole, frames, 2 * frames)  # the middle block of three
    torch.testing.assert_close(
        scores(adapter.rope_own, adapter.rope_prev), scores(own, cut(whole, 0, frames)), atol=2e-2, rtol=1e-2
    )
    torch.testing.assert_close(
        scores(adapter.rope_own, adapter.rope_next),
        scores(own, cut(whole, 2 * frames, 2 * frames + context)),
        atol=2e-2,
        rtol=1e-2,
    )
    # the other way round the offsets would be wrong by a block: the check can tell
    wrong = scores(adapter.rope_own, adapter.rope_next) - scores(own, cut(whole, 0, frames))
    assert wrong.abs().max() > 0.5


def test_refusals(ltx_dir):
    with pytest.raises(TypeError, match="model: the LTX frame plan drives LTXVideoTransformer3DModel"):
        LTXFrameAdapter(torch.nn.Linear(2, 2), (LATENT_CHANNELS, 2, 2, 2), 1)
    with pytest.raises(ValueError, match="context_frames"):
        LTXFrameAdapter(tiny_ltx_transformer(layers=1), (LATENT_CHANNELS, 2, 2, 2), 3)
    base = dict(model=str(ltx_dir), frames=48, block_frames=16, height=64, width=64, steps=3)
    assert VideoSpec.from_dict(base).blocks == 3
    for bad, field in (
        (dict(block_frames=12), "block_frames"),
        (dict(height=48), "height"),
        (dict(width=80), "width"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({**base, **bad})
        assert err.value.field == field
