"""CogVideoX's dynamic classifier-free guidance (``use_dynamic_cfg``: the weight rising over the steps by
``CogVideoXPipeline``'s rule): one block on one worker equals the pipeline called with it (1.0's DDIM, 1.5's DPM),
2 stages equal one worker, and the spec refuses it, naming the field, where it would weigh nothing."""

from __future__ import annotations

import pytest
import torch
from _tiny_cogvideox import TEXT_TOKENS, Z_DIM, save_tiny_cogvideox
from _video_workers import check_two_stages_equal_one_worker, render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, block_step_seed, noise_template

SIZE = 32
TASK = dict(dtype="float32", prompt="red and yellow stripes", negative_prompt="blurry", height=SIZE, width=SIZE,
            steps=3, seed=4, fps=8.0, guidance_scale=4.0, use_dynamic_cfg=True)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox-dynamic")
    return {v: str(save_tiny_cogvideox(root / f"cogvideox-{v}", v, s)) for v, s in {"1.0": "ddim", "1.5": "dpm"}.items()}


@pytest.mark.parametrize("version", ["1.0", "1.5"])
@torch.no_grad()
def test_one_block_equals_the_pipeline_with_dynamic_cfg(dirs, tmp_path, version):
    from diffusers import CogVideoXPipeline

    torch.set_num_threads(1)
    task = dict(TASK, frames=16, block_frames=16, context_frames=4)
    got = render_session(0, 1, dirs[version], str(tmp_path), task)["latents"][0]
    (tmp_path / "fixed").mkdir()
    fixed = render_session(0, 1, dirs[version], str(tmp_path / "fixed"), dict(task, use_dynamic_cfg=False))["latents"][0]
    seed, shape = task["seed"], (Z_DIM, 4, SIZE // 4, SIZE // 4)
    initial = block_noise(noise_template(seed, shape), seed, 0)
    reference = CogVideoXPipeline.from_pretrained(dirs[version], local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)
    expected = reference(
        prompt=task["prompt"], negative_prompt=task["negative_prompt"], height=SIZE, width=SIZE, num_frames=13,
        num_inference_steps=task["steps"], guidance_scale=4.0, use_dynamic_cfg=True,
        generator=torch.Generator().manual_seed(block_step_seed(seed, 0)), latents=initial.transpose(1, 2),
        output_type="latent", **({"max_sequence_length": TEXT_TOKENS} if version == "1.0" else {}),
    ).frames.transpose(1, 2)
    diff = (got - expected).abs().max().item()
    print(f"cogvideox {version} dynamic CFG vs CogVideoXPipeline: max abs diff {diff:.2e}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fixed, expected, atol=1e-3)  # the weight's schedule matters


def test_two_stages_equal_one_worker(dirs, tmp_path):
    task = dict(TASK, frames=24, block_frames=8, context_frames=4)
    check_two_stages_equal_one_worker(dirs["1.5"], str(tmp_path), task, blocks=3)


def test_refused_where_it_would_weigh_nothing(dirs):
    one = {"strategy": "none", "degree": 1}
    base = dict(TASK, frames=16, block_frames=16, context_frames=0, parallel=one)
    assert VideoSpec.from_dict(dict(base, model=dirs["1.5"])).use_dynamic_cfg is True
    for fields, words in (
        (dict(model="builtin-video", height=64, width=64), "the wan family has none"),
        (dict(model=dirs["1.5"], guidance_scale=1.0), "runs no unconditional branch"),
        (dict(model=dirs["1.5"], use_dynamic_cfg="yes"), "expected"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(base, **fields))
        assert err.value.field == "use_dynamic_cfg" and words in str(err.value), str(err.value)
