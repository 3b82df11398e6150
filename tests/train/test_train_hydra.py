"""configs/train.yaml overrides reach the TrainConfig: bubble filling, online latents, failure restarts."""

from __future__ import annotations

import pytest

from cluster.config import compose
from cluster.train import train_config_from_hydra


def test_defaults_keep_cached_latents_and_no_filling_with_one_restart():
    config, _ = train_config_from_hydra(compose("train", []))
    assert (config.unet.latents, config.unet.bubble_filling, config.max_failures) == ("cache", False, 1)


def test_parallel_bubble_filling_and_online_latents_overrides():
    overrides = ["parallel.bubble_filling=true", "parallel.bubble_filling_nice=0", "unet.latents=online"]
    config, _ = train_config_from_hydra(compose("train", [*overrides, "max_failures=3"]))
    assert config.unet.bubble_filling is True and config.unet.bubble_filling_nice == 0
    assert config.unet.latents == "online" and config.max_failures == 3


def test_unknown_latent_source_is_refused_by_name():
    with pytest.raises(ValueError, match="unet.latents"):
        train_config_from_hydra(compose("train", ["unet.latents=disk"]))


def test_video_model_and_dit_overrides_reach_the_config():
    overrides = [
        "model=builtin-video",
        "parallel.stages=2",
        "dit.steps=7",
        "dit.frames=6",
        "dit.resolution=32",
    ]
    config, _ = train_config_from_hydra(compose("train", overrides))
    assert config.model == "builtin-video" and config.stages == 2 and config.run_dir.endswith("builtin-video")
    assert (config.dit.steps, config.dit.frames, config.dit.resolution) == (7, 6, 32)


def test_bad_dit_resolution_is_refused_by_name():
    with pytest.raises(ValueError, match="dit.resolution"):
        train_config_from_hydra(compose("train", ["model=builtin-video", "dit.resolution=40"]))
