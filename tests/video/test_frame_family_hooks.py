"""The family-neutral frame pipeline: a dict-encoded prompt and the family's sampler hooks.

A family's conditioning may be several batch-first tensors (embeddings and an integer mask here): guidance
batches every entry negative first, floats take the model's dtype, masks keep theirs, and the adapter's
``conditions`` sees that same dict. The family's ``set_timesteps``/``step`` hooks replace diffusers' plain calls:
with a schedule of their own the blocks follow it, and the step hook sees the step index and the timesteps.
"""

from __future__ import annotations

import pytest
import torch
from _video_models import LATENT, make_scheduler, tiny_text, tiny_wan

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template
from parallel.frames.pipeline import FramePipeline, FramePipelineConfig
from pipelines.families.wan.frames import WanFrameAdapter


class DictTextAdapter(WanFrameAdapter):
    """Wan's adapter taking {"embeds": [B, L, D], "mask": [B, L] int}: the embeddings where the mask is 1."""

    seen: list = []

    def conditions(self, timestep, text):
        DictTextAdapter.seen.append(text)
        return super().conditions(timestep, text["embeds"] * text["mask"].unsqueeze(-1).to(text["embeds"].dtype))


def _dict_text(seed: int, keep: int) -> dict:
    mask = torch.zeros(1, 5, dtype=torch.int64)
    mask[:, :keep] = 1
    return {"embeds": tiny_text(seed).double(), "mask": mask}


@torch.no_grad()
def test_dict_prompt_is_batched_negative_first_and_cast_per_entry():
    torch.set_num_threads(1)
    DictTextAdapter.seen.clear()
    model, g = tiny_wan(layers=2), 2.5
    text, negative = _dict_text(1, keep=3), _dict_text(2, keep=5)
    config = FramePipelineConfig(frames=2, block_frames=2, context_frames=0, steps=2, seed=3, guidance_scale=g)
    outputs = {}
    FramePipeline(
        model, config, LATENT, text, make_scheduler, outputs.__setitem__, negative_text=negative,
        make_adapter=DictTextAdapter,
    ).run()
    seen = DictTextAdapter.seen[0]
    assert seen["embeds"].dtype == torch.float32 and seen["mask"].dtype == torch.int64
    torch.testing.assert_close(seen["embeds"], torch.cat([negative["embeds"], text["embeds"]]).float())
    assert seen["mask"].tolist() == [[1] * 5, [1, 1, 1, 0, 0]]

    scheduler = make_scheduler()
    scheduler.set_timesteps(2)
    latent = block_noise(noise_template(3, (LATENT[0], 2, *LATENT[1:])), 3, 0)
    cond_text = (text["embeds"] * text["mask"].unsqueeze(-1)).float()
    for t in scheduler.timesteps:
        cond = model(latent, t.reshape(1), cond_text, return_dict=False)[0]
        uncond = model(latent, t.reshape(1), negative["embeds"].float(), return_dict=False)[0]
        latent = scheduler.step(uncond + g * (cond - uncond), t, latent, return_dict=False)[0]
    torch.testing.assert_close(outputs[0], latent, atol=1e-5, rtol=1e-5)


def test_dict_negative_checked_per_entry():
    config = FramePipelineConfig(frames=2, block_frames=2, steps=1, guidance_scale=2.0)
    negative = dict(_dict_text(2, keep=5), mask=torch.ones(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"negative_text: 'mask' shape \(1, 4\) differs"):
        FramePipeline(
            tiny_wan(layers=1), config, LATENT, _dict_text(1, 3), make_scheduler, negative_text=negative,
            make_adapter=DictTextAdapter,
        )
    with pytest.raises(ValueError, match="negative_text: its entries"):
        FramePipeline(
            tiny_wan(layers=1), config, LATENT, _dict_text(1, 3), make_scheduler,
            negative_text={"embeds": negative["embeds"]}, make_adapter=DictTextAdapter,
        )


@torch.no_grad()
def test_sampler_hooks_set_the_schedule_and_apply_the_step():
    torch.set_num_threads(1)
    model, steps = tiny_wan(layers=2), 3
    sigmas = [1.0, 0.6, 0.25]
    shapes, calls = [], []

    def set_timesteps(scheduler, n, block_shape, device):
        shapes.append(block_shape)
        scheduler.set_timesteps(sigmas=sigmas, device=device)

    def step(scheduler, output, index, timesteps, latent):
        calls.append(index)
        return scheduler.step(output, timesteps[index], latent, return_dict=False)[0]

    config = FramePipelineConfig(frames=4, block_frames=2, context_frames=0, steps=steps, seed=5)
    outputs = {}
    pipe = FramePipeline(
        model, config, LATENT, tiny_text(), make_scheduler, outputs.__setitem__, make_adapter=WanFrameAdapter,
        set_timesteps=set_timesteps, step=step,
    )
    pipe.run()
    assert set(shapes) == {(LATENT[0], 2, *LATENT[1:])} and len(shapes) == 3  # the probe, then each block
    assert calls == [s for _, s in pipe.applied] and sorted(calls) == [0, 0, 1, 1, 2, 2]
    reference = make_scheduler()
    reference.set_timesteps(sigmas=sigmas)
    torch.testing.assert_close(pipe.timesteps, reference.timesteps)
    latent = block_noise(noise_template(5, (LATENT[0], 2, *LATENT[1:])), 5, 0)
    for t in reference.timesteps:
        latent = reference.step(model(latent, t.reshape(1), tiny_text(), return_dict=False)[0], t, latent)[0]
    torch.testing.assert_close(outputs[0], latent, atol=1e-5, rtol=1e-5)


def test_wan_is_a_video_pipeline_and_refuses_part_latent_frames_at_submit(tmp_path):
    from _tiny_wan_pipeline import save_tiny_wan_pipeline

    from pipelines.families import family_for_dir
    from pipelines.video_pipeline import VideoPipeline

    wan_dir = save_tiny_wan_pipeline(tmp_path / "tiny-wan")
    family = family_for_dir(wan_dir)
    assert family.temporal_factor(wan_dir) == 4
    assert isinstance(family.load(wan_dir, "float32", "cpu"), VideoPipeline)
    with pytest.raises(SpecError, match="block_frames: this model's VAE packs 4 frames"):
        VideoSpec.from_dict(dict(model=str(wan_dir), frames=12, block_frames=6, height=32, width=32))
