"""The Qwen-Image family's pieces, held to QwenImagePipeline's own code: its guidance (true CFG rescaled to the
conditional's norm per token) on the unpacked latent and on bands of it, the default guidance of every other
family, the tiny tokenizer's split of the prompt template, and the two branches batched at different lengths."""

from __future__ import annotations

import pytest
import torch
from _tiny_qwenimage import qwen_tokenizer
from diffusers import QwenImagePipeline

from pipelines.families import ModelFamily
from pipelines.families.qwenimage import QWENIMAGE
from pipelines.families.qwenimage.conditioning import QwenConditioning

SHAPE = (1, 4, 6, 10)  # unpacked latent: 3 x 5 tokens of 2x2 patches


def _noise(seed: int) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def _pack(x: torch.Tensor) -> torch.Tensor:
    return QwenImagePipeline._pack_latents(x, *x.shape)


def test_true_cfg_equals_the_pipelines_on_packed_tokens():
    """QwenImagePipeline.__call__'s lines, on its packed predictions; the family's, on the unpacked ones."""
    uncond, cond, scale = _noise(1), _noise(2), 4.0
    neg_noise_pred, noise_pred = _pack(uncond), _pack(cond)
    comb_pred = neg_noise_pred + scale * (noise_pred - neg_noise_pred)
    cond_norm = torch.norm(noise_pred, dim=-1, keepdim=True)
    noise_norm = torch.norm(comb_pred, dim=-1, keepdim=True)
    expected = comb_pred * (cond_norm / noise_norm)
    guided = QWENIMAGE.combine_guidance(uncond, cond, scale)
    assert guided.shape == SHAPE
    assert torch.equal(_pack(guided), expected)
    assert not torch.allclose(guided, uncond + scale * (cond - uncond))  # the rescale does something


def test_true_cfg_on_bands_of_whole_token_rows_equals_the_whole_latent():
    """The norm is per token, a 2x2 patch: bands of even rows (patch bands, CFG partners) guide alone."""
    uncond, cond = _noise(1), _noise(2)
    whole = QWENIMAGE.combine_guidance(uncond, cond, 4.0)
    bands = [
        QWENIMAGE.combine_guidance(uncond[..., r:e, :], cond[..., r:e, :], 4.0) for r, e in ((0, 4), (4, 6))
    ]
    assert torch.equal(torch.cat(bands, dim=2), whole)


def test_other_families_guide_as_before():
    uncond, cond = _noise(1), _noise(2)
    assert torch.equal(ModelFamily().combine_guidance(uncond, cond, 7.5), uncond + 7.5 * (cond - uncond))


def test_the_tiny_tokenizer_splits_the_template_where_the_pipeline_drops_its_system_part():
    """QwenImagePipeline drops the first ``prompt_template_encode_start_idx`` (34) tokens, the template's system
    part, as Qwen's own tokenizer splits it; the tiny one splits it the same way."""
    pipe = QwenImagePipeline(None, None, None, None, None)  # the template and the index are set in __init__
    system = pipe.prompt_template_encode.split("{}")[0]
    tokens = qwen_tokenizer()(system).input_ids
    assert len(tokens) == pipe.prompt_template_encode_start_idx
    assert qwen_tokenizer().convert_ids_to_tokens(tokens)[-3:] == ["<|im_start|>", "user", "\u010a"]


@pytest.mark.parametrize("negative_tokens", [3, 5, 8])
def test_branches_of_different_lengths_batch_padded_and_masked(negative_tokens):
    g = torch.Generator().manual_seed(0)
    positive = {
        "encoder_hidden_states": torch.randn(1, 5, 8, generator=g),
        "encoder_hidden_states_mask": None,
    }
    negative = {
        "encoder_hidden_states": torch.randn(1, negative_tokens, 8, generator=g),
        "encoder_hidden_states_mask": None,
    }
    batched = QwenConditioning(QWENIMAGE, positive, negative, 4.0).batched()
    tokens = max(5, negative_tokens)
    embeds, mask = batched["encoder_hidden_states"], batched["encoder_hidden_states_mask"]
    if negative_tokens == 5:  # same lengths: batched as they are, as diffusers would, no mask
        assert mask is None and torch.equal(embeds[1:], positive["encoder_hidden_states"])
        return
    assert embeds.shape == (2, tokens, 8) and mask.tolist() == [
        [1] * negative_tokens + [0] * (tokens - negative_tokens),
        [1] * 5 + [0] * (tokens - 5),
    ]
    assert torch.equal(embeds[0, :negative_tokens], negative["encoder_hidden_states"][0])
    assert torch.equal(embeds[1, :5], positive["encoder_hidden_states"][0])
    assert not embeds[0, negative_tokens:].any() and not embeds[1, 5:].any()
