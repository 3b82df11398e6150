"""A tiny diffusers HunyuanVideoPipeline (a Llama text encoder under HunyuanVideo's default prompt template, a CLIP
text encoder for the pooled projection, a HunyuanVideoTransformer3DModel with two dual-stream and two single-stream
blocks and embedded guidance, the causal 3-D AutoencoderKLHunyuanVideo, flow-matching Euler), built with
diffusers' and transformers' own classes and saved with ``HunyuanVideoPipeline.save_pretrained``.

The Llama tokenizer is a byte-level BPE with Llama 3's pre-tokenizer regex, whose merges make each piece of the
default prompt template (and the tests' prompt words) one token, as Llama 3's own vocabulary does: the template's
system part is then the 95 tokens ``DEFAULT_PROMPT_TEMPLATE["crop_start"]`` drops, so the pipeline's default
template works unchanged. The CLIP tokenizer is the built-in character vocabulary (``pipelines.text_vocab``)."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_pixart import nonzero

LATENT_CHANNELS = 4
"""Latent channels of the VAE (= the transformer's in and out channels)."""
TEXT_WIDTH = 32
"""Hidden size of the tiny Llama (the transformer's ``text_embed_dim``)."""
POOLED_WIDTH = 16
"""Hidden size of the tiny CLIP (its pooled output: the transformer's ``pooled_projection_dim``)."""
CROP_START = 95
"""Tokens of the default template's system part (with BOS), which the pipeline crops."""
TEXT_TOKENS = 16
"""Prompt tokens kept after the crop: the tokenizer's ``model_max_length`` is CROP_START + this."""
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
"""Llama 3's special tokens the template uses (<|end_of_text|> pads)."""
PROMPT_WORDS = "red blue yellow green stripes circle blurry a on and".split()
"""Words the tests' prompts use: one token each (any other text still tokenizes, byte by byte)."""
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
"""Llama 3's pre-tokenizer regex (tiktoken's cl100k pattern)."""
SCHEDULER = dict(num_train_timesteps=1000, shift=7.0)
"""HunyuanVideo's scheduler config (the pipeline passes its own sigmas)."""


def _pieces(text: str) -> list[str]:
    import regex

    pieces = []
    for part in regex.split(r"(<\|[a-z_]+\|>)", text):
        if part and part not in SPECIAL:
            pieces += regex.findall(LLAMA3_SPLIT, part)
    return pieces


def llama_tokenizer():
    """Llama 3's tokenizer layout (byte-level BPE, its split regex, BOS prepended, right padding) over the byte
    alphabet, with merges making every piece of the default template and of ``PROMPT_WORDS`` one token."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab: dict[str, int] = {}
    for token in SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    pieces = _pieces(DEFAULT_PROMPT_TEMPLATE["template"].replace("{}", ""))
    for piece in dict.fromkeys(pieces + [" " + w for w in PROMPT_WORDS] + PROMPT_WORDS):
        symbols = byte_level.pre_tokenize_str(piece)[0][0]
        for end in range(2, len(symbols) + 1):
            if symbols[:end] not in vocab:
                merges.append((symbols[: end - 1], symbols[end - 1]))
                vocab[symbols[:end]] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"), byte_level]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIAL)
    bos = SPECIAL[0]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=SPECIAL[1],
        pad_token=SPECIAL[1],
        padding_side="right",
        model_max_length=CROP_START + TEXT_TOKENS,
    )


def tiny_llama(tokenizer, seed: int = 0):
    """Three Llama layers: the pipeline reads the hidden states two layers before the last."""
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    ids = tokenizer.convert_tokens_to_ids
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=ids(SPECIAL[0]),
        eos_token_id=ids(SPECIAL[1]),
        pad_token_id=ids(SPECIAL[1]),
    )
    return LlamaModel(config).eval()


def tiny_clip(tokenizer, seed: int = 0):
    """One CLIP layer over the character vocabulary; 77 positions, the length the pipeline pads CLIP to."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=POOLED_WIDTH,
            intermediate_size=2 * POOLED_WIDTH,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=len(tokenizer) - 2,
            eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )
    ).eval()


def tiny_hunyuan_transformer(seed: int = 0, layers: int = 2, single_layers: int = 2, heads: int = 2):
    """Dual-stream then single-stream blocks, ``heads`` heads of 12 (RoPE axes 4 + 4 + 4), 2x2 patches, embedded
    guidance."""
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    model = HunyuanVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_attention_heads=heads,
        attention_head_dim=12,
        num_layers=layers,
        num_single_layers=single_layers,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=TEXT_WIDTH,
        pooled_projection_dim=POOLED_WIDTH,
        rope_axes_dim=(4, 4, 4),
    )
    return nonzero(model, seed + 7)


def tiny_hunyuan_vae(seed: int = 0):
    """The causal 3-D VAE at HunyuanVideo's compression (8x in space, 4x in time), 8 channels per level."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        norm_num_groups=4,
        mid_block_add_attention=True,
    )
    return nonzero(vae, seed + 1)


def save_tiny_hunyuanvideo(path: Path, seed: int = 0, layers: int = 2, single_layers: int = 2, heads: int = 2) -> Path:
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline

    from pipelines.builtin.image import build_tokenizer

    tokenizer = llama_tokenizer()
    clip_tokenizer = build_tokenizer()
    pipe = HunyuanVideoPipeline(
        text_encoder=tiny_llama(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=tiny_hunyuan_transformer(seed + 2, layers, single_layers, heads),
        vae=tiny_hunyuan_vae(seed + 3),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        text_encoder_2=tiny_clip(clip_tokenizer, seed + 4),
        tokenizer_2=clip_tokenizer,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
