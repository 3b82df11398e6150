"""HunyuanVideo's ``prompt_template`` (``HunyuanVideoPipeline``'s argument: the text its LLM encoder reads the prompt
in, and the leading tokens it crops): a job's field of that name renders what the pipeline called with it renders
(one block, one worker, the same initial latents), and validation refuses a malformed template, or one for another
family, naming the field."""

from __future__ import annotations

import pytest
import torch
from _tiny_hunyuanvideo import LATENT_CHANNELS, save_tiny_hunyuanvideo
from _tiny_wan_pipeline import save_tiny_wan_pipeline
from _video_workers import render_session

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template

PROMPT = "red and blue stripes"
TEMPLATE = {"template": "A video of: {}", "crop_start": 0}  # as diffusers' own HunyuanVideo tests pass a short one
TASK = dict(prompt=PROMPT, height=32, width=32, frames=12, block_frames=12, context_frames=0, steps=3, seed=2)


@pytest.fixture(scope="module")
def hunyuan_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return str(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan-template") / "tiny-hunyuanvideo"))


@torch.no_grad()
def test_a_template_renders_as_the_pipeline_called_with_it(hunyuan_dir, tmp_path):
    from diffusers import HunyuanVideoPipeline

    got = render_session(0, 1, hunyuan_dir, str(tmp_path), dict(TASK, prompt_template=TEMPLATE))["latents"][0]
    default = render_session(0, 1, hunyuan_dir, str(tmp_path), TASK)["latents"][0]
    latents = block_noise(noise_template(2, (LATENT_CHANNELS, 3, 4, 4)), 2, 0)
    pipe = HunyuanVideoPipeline.from_pretrained(hunyuan_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        prompt=PROMPT, prompt_template=TEMPLATE, height=32, width=32, num_frames=9, num_inference_steps=3,
        latents=latents.clone(), output_type="latent",
    ).frames
    diff = (got - expected).abs().max().item()
    print(f"HunyuanVideo prompt_template, one block vs HunyuanVideoPipeline: max abs diff {diff:.3g}")
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(default, expected, atol=1e-3)  # the template matters


def test_validation(hunyuan_dir, tmp_path):
    base = dict(TASK, model=hunyuan_dir, parallel={"strategy": "none", "degree": 1})
    assert VideoSpec.from_dict(dict(base, prompt_template=TEMPLATE)).stored()["prompt_template"] == TEMPLATE
    assert VideoSpec.from_dict(dict(base, prompt_template={"template": "{}"})).prompt_template == {"template": "{}"}
    for template, field in (
        ("{}", "prompt_template"),
        ({"template": "{}", "crop": 0}, "prompt_template"),
        ({"crop_start": 0}, "prompt_template.template"),
        ({"template": "no slot"}, "prompt_template.template"),
        ({"template": "{} and {}"}, "prompt_template.template"),
        ({"template": "{}", "crop_start": -1}, "prompt_template.crop_start"),
        ({"template": "{}", "crop_start": "3"}, "prompt_template.crop_start"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(base, prompt_template=template))
        assert err.value.field == field, template
    wan = save_tiny_wan_pipeline(tmp_path / "wan")
    with pytest.raises(SpecError) as err:
        VideoSpec.from_dict(dict(base, frames=8, block_frames=8, model=str(wan), prompt_template=TEMPLATE))
    assert err.value.field == "prompt_template" and "HunyuanVideo's" in str(err.value)


def test_the_cli_takes_a_template(hunyuan_dir):
    """configs/video.yaml's ``prompt_template: null`` takes Hydra's dict override."""
    from cluster.cli_jobs import _spec_and_pool

    overrides = ["job=video", "model=local", f"model.name={hunyuan_dir}", "parallel=none", "pool.workers=1",
                 "frames=12", "block_frames=12", "context_frames=0", "height=32", "width=32",
                 "prompt_template={template:'A video of: {}',crop_start:0}"]
    _, spec, _, _ = _spec_and_pool(overrides)
    assert spec.prompt_template == TEMPLATE
