"""HunyuanVideo's transformer cut into the frame pipeline's pieces equals diffusers' own forward on one block."""

from __future__ import annotations

import pytest
import torch
from _tiny_hunyuanvideo import LATENT_CHANNELS, POOLED_WIDTH, TEXT_WIDTH, tiny_hunyuan_transformer

from pipelines.families.hunyuanvideo.frames import HunyuanFrameAdapter


def _text(batch: int = 1, tokens: int = 8, valid: tuple[int, ...] = (5,), seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, tokens, dtype=torch.int64)
    for row, count in enumerate(valid):
        mask[row, :count] = 1
    return {
        "prompt_embeds": torch.randn(batch, tokens, TEXT_WIDTH, generator=generator),
        "prompt_attention_mask": mask,
        "pooled_prompt_embeds": torch.randn(batch, POOLED_WIDTH, generator=generator),
        "guidance": torch.full((batch,), 6000.0),
    }


def _pieces(model, latent, t, text, context_frames):
    adapter = HunyuanFrameAdapter(model, tuple(latent.shape[1:]), context_frames)
    try:
        cond = adapter.conditions(t, text)
        adapter.begin_block(0)
        hidden = adapter.embed(latent, cond)
        for layer in range(adapter.num_layers):
            hidden = adapter.run_layer(layer, hidden, cond)
        assert hidden.shape == adapter.hidden_shape(latent.shape[0], cond)
        return adapter.head(hidden, cond)
    finally:
        adapter.remove()


def _forward(model, latent, t, text):
    return model(
        hidden_states=latent,
        timestep=t.expand(latent.shape[0]),
        encoder_hidden_states=text["prompt_embeds"],
        encoder_attention_mask=text["prompt_attention_mask"],
        pooled_projections=text["pooled_prompt_embeds"],
        guidance=text["guidance"],
        return_dict=False,
    )[0]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_hunyuan_transformer()


@pytest.mark.parametrize("context_frames", [0, 2])
@torch.no_grad()
def test_pieces_equal_model_forward(model, context_frames):
    latent = torch.randn(2, LATENT_CHANNELS, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    t, text = torch.tensor([640.0]), _text(batch=2, valid=(5, 8))
    expected = _forward(model, latent, t, text)
    # with context but no neighbour cached yet, only the (relative) RoPE offset differs
    got = _pieces(model, latent, t, text, context_frames)
    print(f"max abs diff (context {context_frames}): {(got - expected).abs().max().item():.3g}")
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # remove() restored diffusers' processors: the model still gives the same output
    torch.testing.assert_close(_forward(model, latent, t, text), expected)


@torch.no_grad()
def test_neighbours_change_the_result(model):
    """A block that finds its neighbour's edge K/V in the cache attends to it: the output differs."""
    latent = torch.randn(1, LATENT_CHANNELS, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    t, text = torch.tensor([500.0]), _text()
    adapter = HunyuanFrameAdapter(model, tuple(latent.shape[1:]), 1)
    try:
        cond = adapter.conditions(t, text)
        outputs = []
        for block in (0, 1):
            adapter.begin_block(block)
            hidden = adapter.embed(latent, cond)
            for layer in range(adapter.num_layers):
                hidden = adapter.run_layer(layer, hidden, cond)
            outputs.append(adapter.head(hidden, cond))
        assert sorted(adapter.cache.blocks()) == [0, 1]
    finally:
        adapter.remove()
    assert not torch.allclose(outputs[0], outputs[1], atol=1e-4)


def test_refuses_other_models_and_bad_context(model):
    with pytest.raises(TypeError, match="model: the HunyuanVideo frame plan drives"):
        HunyuanFrameAdapter(torch.nn.Linear(2, 2), (4, 2, 4, 4), 1)
    with pytest.raises(ValueError, match="context_frames"):
        HunyuanFrameAdapter(model, (4, 2, 4, 4), 3)
    with pytest.raises(ValueError, match="patch size"):
        HunyuanFrameAdapter(model, (4, 2, 5, 4), 0)


def test_neighbours_sit_just_before_and_after(model):
    """Scores between a block's own queries and its neighbours' keys are those of adjacent frames in one video."""
    from diffusers.models.embeddings import apply_rotary_emb

    frames, context, tpf = 2, 1, 4
    adapter = HunyuanFrameAdapter(model, (LATENT_CHANNELS, frames, 4, 4), context)
    adapter.remove()
    whole = model.rope(torch.empty(1, LATENT_CHANNELS, context + frames + context, 4, 4))
    generator = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, frames * tpf, 2, 12, generator=generator) for _ in range(2))
    edge = k[:, : context * tpf]

    def scores(q_rope, k_rope, keys):
        rq = apply_rotary_emb(q, q_rope, sequence_dim=1)
        return torch.einsum("bqhd,bkhd->bhqk", rq, apply_rotary_emb(keys, k_rope, sequence_dim=1))

    own = slice(context * tpf, (context + frames) * tpf)
    rows = lambda part: (whole[0][part], whole[1][part])  # noqa: E731
    torch.testing.assert_close(
        scores(adapter.rope_own, adapter.rope_prev, edge), scores(rows(own), rows(slice(0, context * tpf)), edge)
    )
    after = slice((context + frames) * tpf, None)
    torch.testing.assert_close(scores(adapter.rope_own, adapter.rope_next, edge), scores(rows(own), rows(after), edge))
