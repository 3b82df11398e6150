"""The built-in video model: a small Wan-layout video DiT with a per-frame VAE, in diffusers format.

The transformer is diffusers' own ``WanTransformer3DModel`` in a tiny configuration (full
spatio-temporal self-attention with 3-D RoPE, cross-attention on the prompt, adaLN timestep
modulation), small enough to train and render on a CPU. ``write_builtin_video`` makes its seeded random
starting point; the committed weights were trained from it by ``tessera train model=builtin-video``
(pipelines/builtin/TRAINING.md). Latent frames map one-to-one onto video frames: the VAE is the built-in
image model's trained ``AutoencoderKL``, applied per frame, so any frame block decodes on its own,
which is what lets finished blocks stream to the MP4. The prompt goes through the image model's
character-level CLIP text encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

from pipelines.builtin import BUILTIN_ROOT, strip_machine_paths
from pipelines.builtin.image import TEXT_WIDTH, vae_config
from pipelines.families.wan.loading import WanVideoPipeline, load_video_pipeline

VIDEO_PIPELINE_CLASS = "TesseraVideoPipeline"


def transformer_config() -> dict:
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=4,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        text_dim=TEXT_WIDTH,
        freq_dim=64,
        ffn_dim=192,
        num_layers=6,
        rope_max_seq_len=1024,
    )


def scheduler_config() -> dict:
    """Wan's sampler: flow matching with a shifted schedule."""
    return dict(num_train_timesteps=1000, shift=3.0)


def build_video_transformer(seed: int = 0) -> WanTransformer3DModel:
    """The built-in video DiT with seeded random weights, in eval mode."""
    torch.manual_seed(seed)
    return WanTransformer3DModel(**transformer_config()).eval()


def model_index() -> dict:
    return {
        "_class_name": VIDEO_PIPELINE_CLASS,
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }


def write_builtin_video(
    target: str | Path | None = None, seed: int = 0, image_model: str | Path | None = None
) -> Path:
    """Write the built-in video pipeline (random transformer, the image model's VAE and text encoder)."""
    target = Path(target) if target is not None else BUILTIN_ROOT / "builtin-video"
    image_dir = Path(image_model) if image_model is not None else BUILTIN_ROOT / "builtin-image"
    target.mkdir(parents=True, exist_ok=True)
    build_video_transformer(seed).save_pretrained(target / "transformer", safe_serialization=True)
    vae = AutoencoderKL.from_pretrained(image_dir / "vae", use_safetensors=True, local_files_only=True)
    if dict(vae.config)["block_out_channels"] != list(vae_config()["block_out_channels"]):
        raise ValueError(f"{image_dir / 'vae'} is not the built-in image model's VAE")
    vae.save_pretrained(target / "vae", safe_serialization=True)
    for component in ("text_encoder", "tokenizer"):
        shutil.copytree(image_dir / component, target / component, dirs_exist_ok=True)
    FlowMatchEulerDiscreteScheduler(**scheduler_config()).save_pretrained(target / "scheduler")
    (target / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")
    strip_machine_paths(target)  # the VAE config would name image_dir/vae
    return target


def build_video_pipeline(seed: int = 0, image_model: str | Path | None = None) -> WanVideoPipeline:
    """The training starting point: a seeded random transformer with the image model's VAE and text encoder."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        pipe = load_video_pipeline(write_builtin_video(Path(scratch) / "video", seed, image_model))
    return pipe


def save_video_pipeline(pipe: WanVideoPipeline, target: str | Path, weights_only: bool = False) -> Path:
    """Write a video pipeline in diffusers format (safetensors). `weights_only` writes only the trained
    components (transformer, text encoder) into an existing pipeline directory, leaving the rest as it is.
    The configs written name no directory of this machine (``_name_or_path`` dropped)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    pipe.transformer.save_pretrained(target / "transformer", safe_serialization=True)
    pipe.text_encoder.save_pretrained(target / "text_encoder", safe_serialization=True)
    if weights_only:
        for component in ("transformer", "text_encoder"):
            strip_machine_paths(target / component)
        return target
    pipe.vae.save_pretrained(target / "vae", safe_serialization=True)
    pipe.tokenizer.save_pretrained(target / "tokenizer")
    pipe.make_scheduler().save_pretrained(target / "scheduler")
    (target / "model_index.json").write_text(json.dumps(model_index(), indent=2) + "\n")
    strip_machine_paths(target)
    return target


if __name__ == "__main__":
    print(write_builtin_video())
