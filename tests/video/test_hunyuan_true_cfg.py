"""HunyuanVideo's true classifier-free guidance (``true_cfg_scale`` above 1 with a ``negative_prompt``: the negative
prompt's branch at the same embedded guidance, as ``HunyuanVideoPipeline.__call__`` runs it): one block on one worker
equals the pipeline called with them; 2 stages, CFG parallel (a branch per worker), Ulysses on 2 workers and on 2 per branch
equal one worker, over real gloo processes; the spec takes the fields as the pipeline does (a negative prompt without
true CFG ignored, with a note) and refuses CFG parallel, naming the field, where there is no branch to split."""

from __future__ import annotations

import pytest
import torch
from _band_checks import band_fields
from _hunyuan_workers import PROMPT, frame_render
from _parallel_dist import run_ranks
from _tiny_hunyuanvideo import LATENT_CHANNELS, save_tiny_hunyuanvideo
from _video_workers import render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template

NEGATIVE = "blurry"
MULTI = dict(frames=6, block_frames=2, context_frames=1, steps=3, seed=4)
VIDEO = dict(  # one block: 3 latent frames x 6 x 4 latent pixels, 6 heads (Ulysses on 2)
    prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=6.0, true_cfg_scale=3.0, height=48, width=32, frames=12,
    block_frames=12, context_frames=0, steps=2, seed=5,
)


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan-cfg") / "tiny-hunyuanvideo", heads=6))


@torch.no_grad()
def test_one_block_equals_the_pipelines_true_cfg(hunyuan_dir):
    from diffusers import HunyuanVideoPipeline

    config = dict(frames=3, block_frames=3, context_frames=1, steps=3, seed=2)
    got = frame_render(0, 1, hunyuan_dir, config, 6.0, NEGATIVE, 3.0)["latents"][0]
    plain = frame_render(0, 1, hunyuan_dir, config, 6.0)["latents"][0]
    block_shape = (LATENT_CHANNELS, 3, 4, 4)
    latents = block_noise(noise_template(2, block_shape), 2, 0)
    pipe = HunyuanVideoPipeline.from_pretrained(hunyuan_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=PROMPT, negative_prompt=NEGATIVE, true_cfg_scale=3.0, height=32, width=32, num_frames=9,
        num_inference_steps=3, latents=latents.clone(), output_type="latent",  # guidance_scale: its default, 6.0
    ).frames
    diff = (got - expected).abs().max().item()
    print(f"HunyuanVideo true CFG, one block vs HunyuanVideoPipeline: max abs diff {diff:.3g}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain, expected, atol=1e-3)  # the negative branch matters


def test_two_stages_equal_one_worker(hunyuan_dir):
    reference = frame_render(0, 1, hunyuan_dir, MULTI, 6.0, NEGATIVE, 3.0)
    got = run_ranks(frame_render, 2, hunyuan_dir, MULTI, 6.0, NEGATIVE, 3.0, timeout=240)[0]
    assert sorted(got["latents"]) == sorted(reference["latents"]) == [0, 1, 2]
    for block, latent in reference["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strategy,cfg", [("frames", True), ("sequence", False), ("sequence", True)])
def test_two_workers_equal_one(hunyuan_dir, tmp_path, strategy, cfg):
    reference = render_session(0, 1, hunyuan_dir, str(tmp_path), band_fields(VIDEO, "none", 1))
    assert reference["report"]["true_cfg_scale"] == 3.0
    degree = 4 if strategy == "sequence" and cfg else 2  # Ulysses on each branch's 2 workers
    fields = band_fields(VIDEO, strategy, degree, cfg=cfg)
    got = run_ranks(render_session, degree, hunyuan_dir, str(tmp_path), fields, timeout=240)[0]
    diff = (got["latents"][0] - reference["latents"][0]).abs().max().item()
    print(f"HunyuanVideo true CFG, {strategy} x{degree} (cfg={cfg}) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], reference["latents"][0], atol=1e-4, rtol=1e-4)


def test_the_spec_takes_true_cfg_as_the_pipeline_does(hunyuan_dir, tmp_path):
    one = {"strategy": "none", "degree": 1}
    spec = VideoSpec.from_dict(dict(VIDEO, model=hunyuan_dir, parallel=one))
    assert (spec.guidance_scale, spec.true_cfg_scale, spec.guides()) == (6.0, 3.0, True)
    plain = VideoSpec.from_dict(dict(VIDEO, model=hunyuan_dir, parallel=one, negative_prompt="", true_cfg_scale=None))
    assert (plain.true_cfg_scale, plain.guides()) == (1.0, False)  # the pipeline's default: one branch
    split = VideoSpec.from_dict(dict(VIDEO, model=hunyuan_dir, parallel={"strategy": "frames", "degree": 2, "cfg": True},
                                     frames=24, block_frames=12))
    assert split.parallel.cfg and split.placed(split.model, 2).true_cfg_scale == 3.0

    def refused(**fields) -> SpecError:
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(VIDEO, model=hunyuan_dir, **fields))
        return err.value

    ignored = VideoSpec.from_dict(dict(VIDEO, model=hunyuan_dir, parallel=one, true_cfg_scale=1.0))
    assert not ignored.guides()  # a negative prompt without true CFG: ignored, as the pipeline ignores it, and said
    assert any(note.startswith("negative_prompt:") and "ignored" in note for note in ignored.notes), ignored.notes
    error = refused(negative_prompt="", parallel={"strategy": "sequence", "degree": 2, "cfg": True})
    assert error.field == "parallel.cfg" and "negative_prompt" in str(error)
    assert refused(true_cfg_scale=-1.0, parallel=one).field == "true_cfg_scale"
    with pytest.raises(SpecError) as err:  # a family weighing its guidance with guidance_scale
        VideoSpec.from_dict({"frames": 8, "true_cfg_scale": 2.0, "parallel": one})
    assert err.value.field == "true_cfg_scale" and "wan family" in str(err.value)
