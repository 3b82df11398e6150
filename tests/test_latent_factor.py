"""A band's latent rows are counted at the VAE's own downsampling, read from its config at submit: an SD-layout
VAE with 3 or 5 blocks (factor 4 or 16) was counted at 8, so a split that fits was refused, and one that does not
was accepted and failed in the worker."""

from __future__ import annotations

import json
import shutil

import pytest

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.families import family_for_dir


def _with_vae_blocks(source, target, blocks: int):
    shutil.copytree(source, target)
    config_path = target / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["block_out_channels"] = [config["block_out_channels"][0]] * blocks
    config["down_block_types"] = [config["down_block_types"][0]] * blocks
    config["up_block_types"] = [config["up_block_types"][0]] * blocks
    config_path.write_text(json.dumps(config))
    return target


def _bands(model, height: int) -> RenderSpec:
    return RenderSpec.from_dict(
        {"model": str(model), "height": height, "width": 64, "steps": 2, "parallel": {"strategy": "patch", "degree": 2}}
    )


def test_the_vaes_blocks_set_the_factor(builtin_image_dir, tmp_path):
    family = family_for_dir(builtin_image_dir)
    assert family.latent_factor(builtin_image_dir) == 8  # 4 blocks
    three = _with_vae_blocks(builtin_image_dir, tmp_path / "vae3", 3)
    five = _with_vae_blocks(builtin_image_dir, tmp_path / "vae5", 5)
    assert (family.latent_factor(three), family.latent_factor(five)) == (4, 16)
    # the UNet's bands align to 4 latent rows: 2 bands need 8
    assert _bands(three, 32).parallel.degree == 2  # 8 latent rows at 4 px (counted at 8 px: 4, refused)
    with pytest.raises(SpecError) as err:  # 4 latent rows at 16 px (counted at 8 px: 8, accepted)
        _bands(five, 64)
    assert err.value.field == "parallel.degree" and "too short for 2 bands" in str(err.value)
    # said in pixels and latent rows, never one for the other: 2 bands of 4 rows at 16 px a row
    assert "height 64px (4 latent rows)" in str(err.value) and "at least 128px" in str(err.value)
