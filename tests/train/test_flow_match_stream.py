"""The video DiT's training micro-batches: flow-matching inputs and targets, the noise levels' time shift, and the
context frames' own levels (`dit.context_offset`)."""

from __future__ import annotations

import pytest
import torch

from cluster.config import compose
from cluster.train import train_config_from_hydra
from runtime.training.video_data import (
    FlowMatchStream,
    context_sigmas,
    shifted_sigmas,
    staggered_sigmas,
    training_shift,
)


def _stream(
    shift: float, micro_batch: int = 64, context_offset: float = 0.0, **context: float
) -> FlowMatchStream:
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(16, 4, 3, 2, 2, generator=gen)
    ids = torch.randint(100, (16, 77), generator=gen)
    cache = (latents, ids, torch.zeros(77, dtype=torch.long))
    return FlowMatchStream(
        cache,
        16,
        micro_batch,
        seed=3,
        replica=0,
        start_micro_batch=0,
        caption_dropout=0.1,
        shift=shift,
        context_offset=context_offset,
        **context,
    )


def _assert_cached_clips(noisy: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor) -> None:
    """Inputs and velocity targets recover clips of the cache: (1 - s) x0 + s n - s (n - x0) = x0."""
    clean = noisy - sigma * target
    cache = _stream(3.0).cache[0]
    assert all(any(torch.allclose(c, x, atol=1e-5) for x in cache) for c in clean)


def test_inputs_and_targets_are_flow_matching_of_the_same_clean_latents():
    (noisy, timesteps, token_ids), target = next(_stream(3.0))
    sigma = (timesteps / 1000).view(-1, 1, 1, 1, 1)
    _assert_cached_clips(noisy, sigma, target)
    assert token_ids.shape == (64, 77) and noisy.device.type == "cpu"


def test_a_larger_shift_draws_higher_noise_levels_from_the_same_draws():
    low, high = next(_stream(3.0))[0][1] / 1000, next(_stream(6.0))[0][1] / 1000
    assert bool((high >= low).all()) and float(high.mean()) > float(low.mean()) + 0.05
    assert float((high > 0.9).float().mean()) > float((low > 0.9).float().mean())


def test_sigma_shift_zero_means_the_samplers_own():
    assert training_shift(0.0, {"shift": 3.0}) == 3.0
    assert training_shift(6.0, {"shift": 3.0}) == 6.0


def test_sigma_shift_override_reaches_the_config_and_a_negative_one_is_refused():
    config, _ = train_config_from_hydra(compose("train", ["model=builtin-video", "dit.sigma_shift=6"]))
    assert config.dit.sigma_shift == 6.0
    with pytest.raises(ValueError, match="dit.sigma_shift"):
        train_config_from_hydra(compose("train", ["model=builtin-video", "dit.sigma_shift=-1"]))


def test_context_levels_first_frame_cleaner_last_noisier():
    levels = torch.tensor([0.5, 0.02, 0.95], dtype=torch.float64)
    sigmas = context_sigmas(levels, 5, 0.1, 3.0)
    assert sigmas.shape == (3, 5)
    torch.testing.assert_close(sigmas[:, 1:4], shifted_sigmas(levels, 3.0).float()[:, None].expand(3, 3))
    torch.testing.assert_close(sigmas[:, 0], shifted_sigmas(torch.tensor([0.4, 0.0, 0.85]), 3.0).float())
    torch.testing.assert_close(sigmas[:, -1], shifted_sigmas(torch.tensor([0.7, 0.22, 1.0]), 3.0).float())


def test_stream_noises_each_frame_at_its_own_level():
    (noisy, timesteps, _), target = next(_stream(3.0, micro_batch=16, context_offset=0.1))
    assert timesteps.shape == (16, 3)
    assert bool((timesteps[:, 0] <= timesteps[:, 1]).all() and (timesteps[:, 2] >= timesteps[:, 1]).all())
    assert bool((timesteps[:, 0] < timesteps[:, 2]).all())
    _assert_cached_clips(noisy, (timesteps / 1000).view(16, 1, 3, 1, 1), target)


def test_context_offset_reaches_the_config_and_out_of_range_is_refused():
    config, _ = train_config_from_hydra(compose("train", ["model=builtin-video", "dit.context_offset=0.1"]))
    assert config.dit.context_offset == 0.1
    with pytest.raises(ValueError, match="dit.context_offset"):
        train_config_from_hydra(compose("train", ["model=builtin-video", "dit.context_offset=0.7"]))


def test_staggered_levels_edges_below_and_above_the_clip():
    levels = torch.rand(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    sigmas = staggered_sigmas(levels, 8, 0.75, 2, 1.0, gen)  # shift 1: sigmas are the levels
    middle = levels.float()[:, None].expand(400, 4)
    torch.testing.assert_close(sigmas[:, 2:6], middle)
    assert bool((sigmas[:, :2] <= sigmas[:, 2:3] + 1e-6).all() and (sigmas[:, 6:] >= sigmas[:, 5:6] - 1e-6).all())
    head_moved = (sigmas[:, 0] < sigmas[:, 2] - 1e-6).float().mean()
    assert 0.6 < float(head_moved) < 0.9  # about the probability, 0.75
    two_frames = ((sigmas[:, 1] < sigmas[:, 2] - 1e-6) & (sigmas[:, 0] < sigmas[:, 2] - 1e-6)).float().mean()
    assert 0.25 < float(two_frames) < 0.5  # about 0.75 x 1/2
    assert float(sigmas[:, 0].min()) < 0.01 and float(sigmas[:, -1].max()) > 0.99  # clean and pure noise drawn


def test_context_clean_stream_and_config():
    (noisy, timesteps, _), target = next(_stream(3.0, micro_batch=16, context_clean=1.0, context_frames=1))
    assert timesteps.shape == (16, 3)
    assert bool((timesteps[:, 0] <= timesteps[:, 1]).all() and (timesteps[:, 2] >= timesteps[:, 1]).all())
    _assert_cached_clips(noisy, (timesteps / 1000).view(16, 1, 3, 1, 1), target)
    torch.testing.assert_close(target, next(_stream(3.0, micro_batch=16))[1])  # same noise: same targets
    config, _ = train_config_from_hydra(compose("train", ["model=builtin-video", "dit.context_clean=0.5"]))
    assert config.dit.context_clean == 0.5 and config.dit.context_frames == 2
    for bad, field in (
        (["dit.context_clean=1.5"], "dit.context_clean"),
        (["dit.context_clean=0.5", "dit.context_offset=0.1"], "dit.context_offset"),
        (["dit.context_clean=0.5", "dit.context_frames=5"], "dit.context_frames"),
    ):
        with pytest.raises(ValueError, match=field):
            train_config_from_hydra(compose("train", ["model=builtin-video", *bad]))
