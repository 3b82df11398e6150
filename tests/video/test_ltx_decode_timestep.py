"""A video job's ``decode_timestep`` and ``decode_noise_scale``: LTX-Video 0.9.1's timestep-conditioned VAE decodes at
the job's timestep as ``LTXPipeline(decode_timestep=...)`` does, and the fields are refused, naming them, for any
other VAE."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _ltx_workers import HEIGHT, NEGATIVE, PROMPT, WIDTH
from _tiny_ltx import save_tiny_ltx
from _video_workers import NpyFrames, render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template

FIELDS = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, frames=24, block_frames=24,
              context_frames=0, steps=2, seed=11, guidance_scale=1.0)


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_ltx(tmp_path_factory.mktemp("ltx-decode") / "tiny-ltx")


def _frames(ltx_dir, tmp_path, name: str, **fields) -> np.ndarray:
    sink = NpyFrames(str(tmp_path / f"{name}.npy"))
    render_session(0, 1, str(ltx_dir), str(tmp_path), dict(FIELDS, **fields), make_writer=lambda: sink)
    return np.concatenate(sink.blocks)


def test_the_fields_are_checked_at_submit(ltx_dir, tmp_path):
    one_worker = dict(FIELDS, parallel={"strategy": "none", "degree": 1})
    spec = VideoSpec.from_dict(dict(one_worker, model=str(ltx_dir), decode_timestep=0.03, decode_noise_scale=0.025))
    assert (spec.decode_timestep, spec.decode_noise_scale) == (0.03, 0.025)
    for value, words in ((1.5, "must be in [0, 1]"), (-0.1, "must be in [0, 1]"), ("0.03", "expected")):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(one_worker, model=str(ltx_dir), decode_timestep=value))
        assert err.value.field == "decode_timestep" and words in str(err.value)
    plain = tmp_path / "ltx-090"  # LTX-Video 0.9.0's VAE: no timestep conditioning
    shutil.copytree(ltx_dir, plain)
    config = json.loads((plain / "vae" / "config.json").read_text())
    (plain / "vae" / "config.json").write_text(json.dumps(dict(config, timestep_conditioning=False)))
    for model in (str(plain), "builtin-video"):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(one_worker, model=model, height=64, width=64, frames=16, block_frames=8,
                                     decode_noise_scale=0.025))
        assert err.value.field == "decode_noise_scale" and "takes no timestep" in str(err.value)


@torch.no_grad()
def test_a_job_decodes_at_its_timestep_as_the_pipeline_does(ltx_dir, tmp_path):
    from diffusers import LTXPipeline

    got = _frames(ltx_dir, tmp_path, "t005", decode_timestep=0.05, decode_noise_scale=0.0)
    reference = LTXPipeline.from_pretrained(ltx_dir, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    shape = (reference.transformer.config.in_channels, 3, HEIGHT // 32, WIDTH // 32)
    initial = block_noise(noise_template(11, shape), 11, 0)
    video = reference(
        prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH, num_frames=17, num_inference_steps=2,
        guidance_scale=1.0, latents=reference._pack_latents(initial), output_type="np", decode_timestep=0.05,
        decode_noise_scale=0.0, return_dict=False,
    )[0][0]  # [F, H, W, 3] in [0, 1]
    expected = np.round(video * 255).astype(np.int16)
    assert got.shape == expected.shape == (17, HEIGHT, WIDTH, 3)
    assert np.abs(got.astype(np.int16) - expected).max() <= 1  # the same decode, rounded to uint8
    default = _frames(ltx_dir, tmp_path, "t0")  # the pipeline's default timestep, 0: other frames
    assert np.abs(default.astype(np.int16) - got).max() > 2
    noisy = _frames(ltx_dir, tmp_path, "noisy", decode_timestep=0.05, decode_noise_scale=0.05)
    assert np.abs(noisy.astype(np.int16) - got).max() > 0  # the noise is mixed in (drawn from the job's seed)
