"""A tiny Qwen-Image pipeline (QwenImagePipeline: a Qwen2.5-VL text encoder with a byte-level BPE tokenizer built
here from a small vocabulary, a QwenImageTransformer2DModel with two dual-stream blocks, the Wan-style
AutoencoderKLQwenImage with per-channel latent mean and std, flow matching with Qwen-Image's
resolution-dependent shift), built with diffusers' and transformers' own classes and saved in diffusers format
with safetensors."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_pixart import nonzero

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
"""Qwen2's special tokens the prompt template uses (<|endoftext|> pads)."""
TEMPLATE_WORDS = (
    "system Describe the image by detailing the color shape size texture quantity text spatial relationships of "
    "objects and background user assistant"
).split()
"""The words of QwenImagePipeline's prompt template: each one token, as in Qwen's own vocabulary, so the template's
system part is the 34 tokens the pipeline drops (``prompt_template_encode_start_idx``)."""
LINE_STARTS = ("system", "Describe", "user", "assistant")
"""The template's words that start a line, with no space before them."""
PROMPT_WORDS = "red blue yellow green stripes circle blurry a on".split()
"""The prompts' words the tests use, one token each (any other text still tokenizes, byte by byte)."""
LATENT_CHANNELS = 4
"""z_dim of the tiny VAE; the transformer takes 2x2 packed latents, 4 x as many channels."""
TEXT_WIDTH = 32
"""Hidden size of the tiny Qwen2.5-VL language model (the transformer's ``joint_attention_dim``)."""

SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=1.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=0.9,
    base_image_seq_len=256,
    max_image_seq_len=8192,
    shift_terminal=0.02,
    time_shift_type="exponential",
)
"""Qwen-Image's scheduler config: the shift grows with the image's token count (``calculate_shift``)."""


def qwen_tokenizer():
    """A Qwen2 tokenizer (byte-level BPE with Qwen2's pre-tokenizer) over the byte alphabet, with merges making
    each template and prompt word (with or without its leading space) one token."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for token in SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(token, len(vocab))
    words = TEMPLATE_WORDS + PROMPT_WORDS
    # the words after a space (Ġ, the byte-level space) first, then the template's line starts, then the
    # prompts' first words: BPE applies merges by rank, so a word's merges must not break up another's
    for piece in ["\u0120" + word for word in words] + list(LINE_STARTS) + PROMPT_WORDS:
        for end in range(2, len(piece) + 1):
            if piece[:end] not in vocab:
                merges.append((piece[: end - 1], piece[end - 1]))
                vocab[piece[:end]] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=2048)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    return tokenizer


def tiny_qwen_text_encoder(tokenizer, seed: int = 0):
    """Qwen2.5-VL with one text layer and a one-block vision tower (QwenImagePipeline's text encoder class)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [1, 1, 2]},
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=TEXT_WIDTH,
            fullatt_block_indexes=[0],
        ),
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_qwen_transformer(seed: int = 0, text_dim: int = TEXT_WIDTH, latent_channels: int = LATENT_CHANNELS):
    """Two dual-stream blocks; packed 2x2 latents, so 4x the latent channels in and out."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(seed)
    model = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * latent_channels,
        out_channels=latent_channels,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=text_dim,
        axes_dims_rope=(4, 6, 6),  # add up to the head width, as Qwen-Image's (16, 56, 56) add up to 128
    )
    return nonzero(model, seed + 7)


def tiny_qwen_vae(seed: int = 0):
    """The Wan-style causal 3-D VAE (8x spatial), its latents normalised per channel."""
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.05],
        latents_std=[1.5, 0.8, 1.2, 2.0],
    )
    return nonzero(vae, seed + 1)


def save_tiny_qwenimage(path: Path, seed: int = 0) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    tokenizer = qwen_tokenizer()
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        vae=tiny_qwen_vae(seed + 1),
        text_encoder=tiny_qwen_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=tiny_qwen_transformer(seed + 2),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
