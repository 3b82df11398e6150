"""A tiny SanaPipeline (Gemma-2 text encoder over a small local vocabulary, Sana transformer with linear attention,
a 32x deep-compression autoencoder, DPM-Solver++ with flow sigmas as Sana ships it), built with diffusers' and
transformers' own classes and saved with ``save_pretrained``: Sana's layout to render offline in tests."""

from __future__ import annotations

from pathlib import Path

import torch
from _tiny_pixart import nonzero

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
WORDS = ["red", "blue", "green", "and", "stripes", "circle", "blurry", "on", "prompt", "user", "the"]


def gemma_tokenizer():
    """A Gemma tokenizer over a small vocabulary: Gemma's BPE layout (spaces as "▁", byte fallback), its pieces
    the bytes, the lower-case letters and a few whole words; built with the ``tokenizers`` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import GemmaTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(char, len(vocab))
    merges = []
    for word in WORDS:  # "▁" + "r" -> "▁r", "▁r" + "e" -> "▁re", ...
        piece = "▁"
        for char in word:
            merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(
        models.BPE(vocab=vocab, merges=list(dict.fromkeys(merges)), unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    )
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    return GemmaTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
        add_bos_token=True,
        add_eos_token=False,
    )


def tiny_dc_autoencoder(latent_channels: int = 8, stages: int = 6):
    """diffusers' AutoencoderDC with ``stages`` resolution levels (6: Sana's 32x) and 8 channels at each."""
    from diffusers import AutoencoderDC

    return AutoencoderDC(
        in_channels=3,
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_block_out_channels=(8,) * stages,
        decoder_block_out_channels=(8,) * stages,
        encoder_layers_per_block=(1,) * stages,
        decoder_layers_per_block=(1,) * stages,
        encoder_qkv_multiscales=((),) * stages,
        decoder_qkv_multiscales=((),) * stages,
        scaling_factor=0.41407,
    )


def tiny_sana_transformer(in_channels: int = 8, caption_channels: int = 24, patch_size: int = 1, **extra):
    """diffusers' SanaTransformer2DModel with 2 layers and 16 channels (2 heads of 8)."""
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel(
        in_channels=in_channels,
        out_channels=in_channels,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=caption_channels,
        sample_size=8,
        patch_size=patch_size,
        **extra,
    )


def save_tiny_sana(path: Path, seed: int = 0) -> Path:
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tokenizer = gemma_tokenizer()
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=12,
            max_position_embeddings=4096,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()
    vae = tiny_dc_autoencoder()
    transformer = tiny_sana_transformer(vae.config.latent_channels, text_encoder.config.hidden_size)
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=nonzero(vae, seed + 1),
        transformer=nonzero(transformer, seed + 2),
        scheduler=scheduler,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
