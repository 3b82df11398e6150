"""Per-frame timesteps in the Wan pipeline layers (`dit.context_offset`): diffusers' own per-token path agrees,
equal levels give the per-clip result, and the training stream draws the context frames' levels as documented."""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel

from cluster.config import compose
from cluster.train import train_config_from_hydra
from parallel.pipeline_unet import run_layers
from parallel.pipeline_wan import wan_layers
from pipelines.builtin_image import build_image_pipeline
from runtime.train_video_data import FlowMatchStream, context_sigmas, shifted_sigmas


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(3)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=64,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=64,
    )
    return model.eval(), build_image_pipeline(seed=4).text_encoder.eval()


def _inputs(text_encoder, batch: int = 2, frames: int = 3):
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn((batch, 4, frames, 4, 6), generator=gen)
    per_frame = torch.rand((batch, frames), generator=gen) * 1000
    ids = torch.randint(text_encoder.config.vocab_size, (batch, 77), generator=gen)
    return latent, per_frame, ids


def test_per_frame_timesteps_equal_diffusers_per_token_path(parts):
    model, text_encoder = parts
    latent, per_frame, ids = _inputs(text_encoder)
    per_token = per_frame.repeat_interleave((4 // 2) * (6 // 2), dim=1)  # 6 tokens per frame
    with torch.no_grad():
        expected = model(latent, per_token, text_encoder(ids)[0]).sample
        got = run_layers(wan_layers(model, text_encoder), (latent, per_frame, ids))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_equal_levels_per_frame_equal_one_level_per_clip(parts):
    model, text_encoder = parts
    latent, per_frame, ids = _inputs(text_encoder)
    level = per_frame[:, :1]
    layers = wan_layers(model, text_encoder)
    with torch.no_grad():
        uniform = run_layers(layers, (latent, level.expand(-1, 3).contiguous(), ids))
        per_clip = run_layers(layers, (latent, level[:, 0], ids))
        mixed = run_layers(layers, (latent, per_frame, ids))
    torch.testing.assert_close(uniform, per_clip, rtol=1e-5, atol=1e-5)
    assert (mixed - per_clip).abs().max() > 1e-3


def test_per_frame_timesteps_must_match_the_frames(parts):
    model, text_encoder = parts
    latent, per_frame, ids = _inputs(text_encoder)
    with pytest.raises(ValueError, match="timesteps"):
        run_layers(wan_layers(model, text_encoder), (latent, per_frame[:, :2], ids))


def test_context_levels_first_frame_cleaner_last_noisier():
    levels = torch.tensor([0.5, 0.02, 0.95], dtype=torch.float64)
    sigmas = context_sigmas(levels, 5, 0.1, 3.0)
    assert sigmas.shape == (3, 5)
    torch.testing.assert_close(sigmas[:, 1:4], shifted_sigmas(levels, 3.0).float()[:, None].expand(3, 3))
    torch.testing.assert_close(sigmas[:, 0], shifted_sigmas(torch.tensor([0.4, 0.0, 0.85]), 3.0).float())
    torch.testing.assert_close(sigmas[:, -1], shifted_sigmas(torch.tensor([0.7, 0.22, 1.0]), 3.0).float())


def test_stream_noises_each_frame_at_its_own_level():
    gen = torch.Generator().manual_seed(0)
    cache = (
        torch.randn(8, 4, 5, 2, 2, generator=gen),
        torch.zeros(8, 77, dtype=torch.long),
        torch.zeros(77).long(),
    )
    stream = FlowMatchStream(
        cache,
        8,
        16,
        seed=1,
        replica=0,
        start_micro_batch=0,
        caption_dropout=0.0,
        shift=3.0,
        context_offset=0.1,
    )
    (noisy, timesteps, _), target = next(stream)
    assert timesteps.shape == (16, 5)
    assert bool((timesteps[:, 0] <= timesteps[:, 2]).all()) and bool(
        (timesteps[:, -1] >= timesteps[:, 2]).all()
    )
    sigma = (timesteps / 1000).view(16, 1, 5, 1, 1)
    clean = noisy - sigma * target
    assert all(any(torch.allclose(c, x, atol=1e-5) for x in cache[0]) for c in clean)


def test_context_offset_reaches_the_config_and_out_of_range_is_refused():
    config, _ = train_config_from_hydra(compose("train", ["model=builtin-video", "dit.context_offset=0.1"]))
    assert config.dit.context_offset == 0.1
    with pytest.raises(ValueError, match="dit.context_offset"):
        train_config_from_hydra(compose("train", ["model=builtin-video", "dit.context_offset=0.7"]))
