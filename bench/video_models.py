"""The video pipelines ``bench.video_strategies`` renders, built offline and saved to a directory.

Every family's tiny pipeline comes from the test fixtures' own builders (``tests/video/_tiny_*.py``: diffusers'
and transformers' classes, local tokenizers, ``save_pretrained``), imported from there rather than copied; the
speed models are those directories with the transformer replaced by a bigger one of the same layout (same
latent channels and text widths, so the rest of the pipeline fits it), big enough that its compute, not the
queue's or the pool's overheads, dominates a render on CPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def use_test_fixtures() -> None:
    """Make the test fixtures' builders importable (they import each other by bare module name)."""
    for path in (TESTS, TESTS / "video"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


@dataclass(frozen=True)
class SpeedModel:
    """The transformer of a speed model."""

    heads: int = 8
    """Attention heads (Ulysses needs them divisible by the workers)."""
    head_dim: int = 64
    """Channels per head."""
    layers: int = 4
    """Transformer blocks (HunyuanVideo: half dual-stream, half single-stream)."""
    patch: int = 1
    """Latent pixels per token side. 1 gives as many tokens at 64 px as 2 at 128 px for a quarter of the VAE's
    decode, which on CPU (3-D convolutions at few channels) would otherwise outweigh the transformer."""

    def describe(self) -> str:
        return (
            f"{self.layers} blocks, {self.heads} heads x {self.head_dim}, {self.patch}x{self.patch} patches, float32, "
            "random weights"
        )


def save_wan_speed_model(path: Path, size: SpeedModel) -> Path:
    """A Wan 2.1 text-to-video directory (the tiny pipeline's UMT5, causal VAE and UniPC) with a bigger
    ``WanTransformer3DModel``; rotary positions for up to 1,024 latent frames, so a whole-video strategy can render
    long videos as one block."""
    use_test_fixtures()
    from _tiny_wan_pipeline import Z_DIM, _nonzero, save_tiny_wan_pipeline
    from diffusers import WanTransformer3DModel

    save_tiny_wan_pipeline(path)
    dim = size.heads * size.head_dim
    transformer = WanTransformer3DModel(
        patch_size=(1, size.patch, size.patch),
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        in_channels=Z_DIM,
        out_channels=Z_DIM,
        text_dim=32,  # the tiny UMT5's width
        freq_dim=64,
        ffn_dim=4 * dim,
        num_layers=size.layers,
        rope_max_seq_len=1024,
    )
    _nonzero(transformer, 11).save_pretrained(path / "transformer", safe_serialization=True)
    return path


def save_hunyuan_speed_model(path: Path, size: SpeedModel) -> Path:
    """A HunyuanVideo directory (the tiny pipeline's Llama and CLIP, causal VAE, flow-matching Euler) with a bigger
    ``HunyuanVideoTransformer3DModel``: ``layers // 2`` dual-stream then as many single-stream blocks."""
    use_test_fixtures()
    from _tiny_hunyuanvideo import LATENT_CHANNELS, POOLED_WIDTH, TEXT_WIDTH, save_tiny_hunyuanvideo
    from _tiny_pixart import nonzero
    from diffusers import HunyuanVideoTransformer3DModel

    save_tiny_hunyuanvideo(path)
    third = size.head_dim // 3 // 2 * 2  # rotary axes (frames, rows, columns): even, summing to head_dim
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        num_attention_heads=size.heads,
        attention_head_dim=size.head_dim,
        num_layers=size.layers // 2,
        num_single_layers=size.layers - size.layers // 2,
        num_refiner_layers=1,
        mlp_ratio=4.0,
        patch_size=size.patch,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=TEXT_WIDTH,
        pooled_projection_dim=POOLED_WIDTH,
        rope_axes_dim=(size.head_dim - 2 * third, third, third),
    )
    nonzero(transformer, 11).save_pretrained(path / "transformer", safe_serialization=True)
    return path


SPEED_MODELS = {"wan": save_wan_speed_model, "hunyuanvideo": save_hunyuan_speed_model}
"""The speed table's models by name, each ``builder(path, SpeedModel)``."""


def _tiny(name: str, path: Path) -> Path:
    use_test_fixtures()
    if name == "wan":
        from _tiny_wan_pipeline import save_tiny_wan_pipeline

        return save_tiny_wan_pipeline(path)
    if name == "wan22-a14b":
        from _tiny_wan22 import save_tiny_wan_two_experts

        return save_tiny_wan_two_experts(path)
    if name == "wan22-ti2v":
        from _tiny_wan22 import save_tiny_wan_ti2v

        return save_tiny_wan_ti2v(path)
    if name == "hunyuanvideo":
        from _tiny_hunyuanvideo import save_tiny_hunyuanvideo

        return save_tiny_hunyuanvideo(path)
    if name.startswith("cogvideox"):
        from _tiny_cogvideox import save_tiny_cogvideox

        return save_tiny_cogvideox(path, version=name.removeprefix("cogvideox-"))
    if name == "ltx":
        from _tiny_ltx import save_tiny_ltx

        return save_tiny_ltx(path)
    raise ValueError(f"unknown tiny video model {name!r}")


@dataclass(frozen=True)
class TinyModel:
    """One family's tiny pipeline in the memory table, and the frame blocks it renders in."""

    name: str
    """Its builder's name (``_tiny``)."""
    label: str
    """How the table names it."""
    block_frames: int
    """Video frames per block: two latent frames of its VAE."""
    size: int = 64
    """Frame height and width in pixels (a multiple of every factor the family checks)."""

    def save(self, root: Path) -> Path:
        return _tiny(self.name, root / self.name)


TINY_MODELS = (
    TinyModel("wan", "Wan 2.1 (T2V)", 8),
    TinyModel("wan22-a14b", "Wan 2.2 A14B (two experts)", 8),
    TinyModel("wan22-ti2v", "Wan 2.2 TI2V-5B layout", 8),
    TinyModel("hunyuanvideo", "HunyuanVideo", 8),
    TinyModel("cogvideox-1.0", "CogVideoX 1.0", 8),
    TinyModel("cogvideox-1.5", "CogVideoX 1.5", 8, size=32),  # its tiny transformer's sample size (see below)
    TinyModel("ltx", "LTX-Video", 16),
)
"""The memory table's models, every family the frame pipeline serves (LTX-Video's VAE packs 8 frames a latent
frame, the others 4). CogVideoX 1.5 renders at 32 px: diffusers builds its rotary positions on a grid sliced to the
transformer's ``sample_height/width`` (8 latent rows in the tiny one, 300 in the real one), and a larger frame
fails inside ``get_3d_rotary_pos_embed``."""
