"""Loading diffusers pipelines and models from local directories, and the errors for bad ones."""

import json
import shutil

import pytest
import torch
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

from pipelines.builtin import resolve_model
from pipelines.errors import ModelDirectoryError
from pipelines.loading import load_model, load_pipeline


def test_builtin_pipeline_loads_in_eval_mode(builtin_image_dir):
    pipe = load_pipeline(builtin_image_dir)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert not pipe.unet.training and not pipe.vae.training and not pipe.text_encoder.training


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelDirectoryError, match="no-such-model.*does not exist"):
        load_pipeline(missing)
    with pytest.raises(ModelDirectoryError, match="neither a built-in model"):
        resolve_model(str(missing))


def test_single_model_directory_is_not_a_pipeline(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelDirectoryError, match="no model_index.json.*single model"):
        load_pipeline(tmp_path)


def test_malformed_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelDirectoryError, match="model_index.json is not valid JSON"):
        load_pipeline(tmp_path)


def test_missing_component_folder(tmp_path, builtin_image_dir):
    copy = tmp_path / "pipe"
    shutil.copytree(builtin_image_dir, copy)
    shutil.rmtree(copy / "unet")
    with pytest.raises(ModelDirectoryError, match="lacks component folder unet/"):
        load_pipeline(copy)


def test_pickled_weights_are_refused(tmp_path, builtin_image_dir):
    copy = tmp_path / "pipe"
    shutil.copytree(builtin_image_dir, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(copy / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelDirectoryError, match="only pickled weights.*safetensors only"):
        load_pipeline(copy)


def test_model_config_without_class_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"in_channels": 4}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelDirectoryError, match="names no diffusers model class"):
        load_model(tmp_path)


def _pixart():
    return PixArtTransformer2DModel(
        sample_size=8,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        cross_attention_dim=16,
        caption_channels=16,
        patch_size=2,
        norm_type="ada_norm_single",
        use_additional_conditions=False,
    )


def test_pixart_transformer_round_trips(tmp_path):
    torch.manual_seed(0)
    model = _pixart().eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, PixArtTransformer2DModel) and not loaded.training
    x = torch.randn(1, 4, 8, 8)
    text = torch.randn(1, 5, 16)
    t = torch.tensor([500])
    cond = {"resolution": None, "aspect_ratio": None}
    with torch.no_grad():
        want = model(x, encoder_hidden_states=text, timestep=t, added_cond_kwargs=cond).sample
        got = loaded(x, encoder_hidden_states=text, timestep=t, added_cond_kwargs=cond).sample
    torch.testing.assert_close(got, want)


def test_dit_transformer_round_trips(tmp_path):
    torch.manual_seed(0)
    model = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_model(tmp_path)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        want = model(x, timestep=torch.tensor([3]), class_labels=torch.tensor([1])).sample
        got = loaded(x, timestep=torch.tensor([3]), class_labels=torch.tensor([1])).sample
    torch.testing.assert_close(got, want)
