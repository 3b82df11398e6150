"""A tiny PixArt-alpha pipeline (T5 text encoder with an in-memory word vocabulary, PixArt transformer,
VAE), saved in diffusers format with safetensors: a DiT pipeline to render offline in tests."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["blue", "and", "yellow", "vertical", "stripes", "red", "a", "circle", "on", "green"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    # T5's tokenizer rebuilds a Unigram model from the saved vocabulary: give it one
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0) for w in WORDS]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return T5TokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


def nonzero(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """diffusers zero-initialises some output layers: give them small values so every layer matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


def save_tiny_pixart(path: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    ).eval()
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=16,
        caption_channels=32,
        sample_size=8,
        patch_size=2,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 8, 8],
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=nonzero(vae, seed + 1),
        transformer=nonzero(transformer, seed + 2),
        scheduler=DDIMScheduler(),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
