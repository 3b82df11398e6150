"""Qwen-Image through sequence parallelism (diffusers' context-parallel plan of QwenImageTransformer2DModel, Ulysses
and Ring) equals one worker, through the pool, with prompts whose token count the workers do not divide: the family
pads each branch's text with masked zeros in the worker, which changes nothing (checked on the transformer alone
too); diffusers' Ring takes no mask, so such a render runs its Ring workers as Ulysses, and says so."""

from __future__ import annotations

import pytest
import torch
from _tiny_qwenimage import save_tiny_qwenimage, tiny_qwen_transformer

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families.qwenimage.conditioning import EMBEDS, MASK, RING_MASK, pad_text
from runtime.jobs.image import run_render

TOL = {"atol": 1e-4, "rtol": 1e-4}
ODD = "red blue yellow stripes"
"""Four one-token words and the template's five closing tokens: 9 text tokens."""
EVEN = "red blue stripes"
"""8 text tokens: they split between 2 workers as encoded, so Ring runs unmasked."""
NEGATIVE = "blurry"
"""6 text tokens: batched with ODD (padded to 10), the two branches are masked."""


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return save_tiny_qwenimage(tmp_path_factory.mktemp("qwen-seq") / "tiny-qwenimage")


def _spec(model_dir, prompt: str, true_cfg_scale: float = 1.0, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "prompt": prompt,
            "negative_prompt": NEGATIVE,
            "height": 64,
            "width": 48,  # 4 x 3 tokens of 2x2 packed latents
            "steps": 3,
            "seed": 3,
            "true_cfg_scale": true_cfg_scale,
            "parallel": parallel or {"strategy": "none"},
        }
    )


def test_the_test_prompts_have_the_token_counts_they_claim(qwen_dir):
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(qwen_dir)
    lengths = [pipe.encode_prompt(prompt=p, device="cpu")[0].shape[1] for p in (ODD, EVEN, NEGATIVE)]
    assert lengths == [9, 8, 6]


def test_padded_text_is_inert_in_the_transformer():
    """Masked zeros after the prompt: the image tokens' output is the unpadded forward's (one device)."""
    torch.manual_seed(0)
    model = tiny_qwen_transformer()
    text = {EMBEDS: torch.randn(1, 9, model.config.joint_attention_dim), MASK: None}
    latent = torch.randn(1, 12, model.config.in_channels)

    def forward(inputs):
        with torch.no_grad():
            return model(
                hidden_states=latent, timestep=torch.tensor([0.7]), img_shapes=[[(1, 4, 3)]], return_dict=False,
                **inputs,
            )[0]

    torch.testing.assert_close(forward(pad_text(text, 12)), forward(text), atol=1e-6, rtol=1e-6)


def test_sequence_shape_leaves_the_text_to_the_worker(qwen_dir):
    from pipelines.families import family_for_dir

    shape = family_for_dir(qwen_dir).sequence_shape(qwen_dir, 64, 48)
    assert (shape.image_tokens, shape.text_tokens, shape.heads) == (12, 0, 2)
    with pytest.raises(SpecError) as caught:  # 3 x 3 tokens do not split between 2 workers
        RenderSpec.from_dict(
            {"model": str(qwen_dir), "height": 48, "width": 48, "parallel": {"strategy": "sequence", "degree": 2}}
        )
    assert caught.value.field == "height"


@pytest.mark.parametrize("ring", [2, 4])
def test_ring_needs_the_heads_to_split_between_all_workers(qwen_dir, ring):
    """A masked text runs its Ring workers as Ulysses: the tiny model's 2 heads do not split between 4."""
    with pytest.raises(SpecError) as caught:
        _spec(qwen_dir, ODD, strategy="sequence", degree=4, ring=ring)
    assert caught.value.field == "parallel.ring" and "Ring" in str(caught.value)


def test_cfg_parallel_asks_for_true_cfg(qwen_dir):
    with pytest.raises(SpecError) as caught:
        _spec(qwen_dir, ODD, 1.0, strategy="sequence", degree=4, cfg=True)
    assert caught.value.field == "parallel.cfg" and "true_cfg_scale" in str(caught.value)


def _sequence(result) -> list[dict]:
    return [w["sequence"] for w in result.metadata["workers"]]


@pytest.mark.parametrize(
    "prompt, true_cfg_scale, ring, runs_ring",
    [
        (ODD, 1.0, 1, False),  # padded 9 -> 10: Ulysses takes the mask
        (ODD, 1.0, 2, False),  # padded: Ring cannot take the mask, its workers run as Ulysses
        (EVEN, 1.0, 2, True),  # 8 tokens, no mask: Ring proper
        (ODD, 4.0, 1, False),  # true CFG batched: 9 and 6 tokens padded to 10, both masked
    ],
    ids=["ulysses-odd", "ring-odd", "ring-even", "ulysses-true-cfg"],
)
def test_sequence_parallel_equals_one_worker(pool2, qwen_dir, prompt, true_cfg_scale, ring, runs_ring):
    one = run_render(pool2, _spec(qwen_dir, prompt, true_cfg_scale), progress=False, decode=False)
    spec = _spec(qwen_dir, prompt, true_cfg_scale, strategy="sequence", degree=2, ring=ring)
    result = run_render(pool2, spec, progress=False, decode=False)
    torch.testing.assert_close(result.latents, one.latents, **TOL)
    assert result.metadata["strategy"] == "sequence"
    for seq, worker in zip(_sequence(result), result.metadata["workers"]):
        sent = worker["bytes_sent_by_kind_and_peer"]
        if runs_ring:
            assert (seq["ulysses"], seq["ring"]) == (1, 2) and "all_to_all" not in sent
        else:
            assert (seq["ulysses"], seq["ring"]) == (2, 1) and "all_to_all" in sent
        assert any(RING_MASK in note for note in seq["notes"]) == (ring == 2 and not runs_ring)
