"""A tiny diffusers WanPipeline (UMT5 text encoder with an in-memory word vocabulary, Wan transformer,
causal 3-D Wan VAE, UniPC flow sampler), saved with ``WanPipeline.save_pretrained``: a full diffusers
video pipeline directory to render offline in tests."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["blue", "and", "yellow", "vertical", "stripes", "red", "blurry", "a", "circle", "on", "green"]
Z_DIM = 4
"""Latent channels of the VAE (= the transformer's in/out channels)."""
TEXT_TOKENS = 12
"""The tokenizer's model_max_length: prompt embeddings are this many tokens."""


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    # T5's tokenizer rebuilds a Unigram model from the saved vocabulary: give it one
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(w, -1.0) for w in WORDS]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return T5TokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=TEXT_TOKENS,
    )


def _nonzero(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """diffusers zero-initialises some output layers: give them small values so every layer matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


def save_tiny_wan_pipeline(path: Path, seed: int = 0, layers: int = 4) -> Path:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4)
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=Z_DIM,
        out_channels=Z_DIM,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=layers,
        rope_max_seq_len=64,
    )
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=Z_DIM,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.1, -0.2, 0.3, 0.0],
        latents_std=[1.5, 0.8, 1.2, 1.0],
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=_nonzero(vae, seed + 1),
        scheduler=scheduler,
        transformer=_nonzero(transformer, seed + 2),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
