"""Wan 2.2 and image-to-video layouts through the frame pipeline against diffusers called directly (tiny
directories built offline, ``_tiny_wan22``): one block on one worker is ``WanPipeline`` /
``WanImageToVideoPipeline(...)(latents=..., output_type="latent")`` from the same initial latents, for Wan 2.1 I2V
(CLIP image tokens through diffusers' added K/V), Wan 2.2 I2V and T2V A14B (two experts switching at the boundary
timestep) and TI2V-5B (its own VAE); an I2V video on 2 stages equals the 1-worker block-wise schedule; the
spec refuses a bad ``image`` naming the field."""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_wan22 import (
    BOUNDARY_RATIO,
    save_test_image,
    save_tiny_wan_i2v,
    save_tiny_wan_ti2v,
    save_tiny_wan_two_experts,
)
from _wan22_workers import I2V_STAGES, NEGATIVE, PROMPT, SIZE, i2v_stages, run_wan

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, noise_template
from pipelines.families.wan.experts import WanExperts
from pipelines.families.wan.loading import load_video_pipeline

BUILDERS = {
    "i2v21": lambda path: save_tiny_wan_i2v(path),
    "i2v22": lambda path: save_tiny_wan_i2v(path, two_experts=True),
    "a14b": save_tiny_wan_two_experts,
    "ti2v": save_tiny_wan_ti2v,
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("wan22")
    made = {name: build(root / name) for name, build in BUILDERS.items()}
    made["image"] = save_test_image(root / "first.png")
    made["other"] = save_test_image(root / "other.png", height=24, width=24)
    return made


def _diffusers_latents(model_dir, pipe, initial, steps, guidance_scale, size, image=None):
    """The diffusers pipeline of ``model_dir`` called directly from ``initial`` latents [1, C, F, h, w], the prompts
    by its own defaults."""
    import diffusers
    from PIL import Image

    reference = getattr(diffusers, pipe.pipeline_class).from_pretrained(
        model_dir, local_files_only=True, use_safetensors=True
    )
    reference.set_progress_bar_config(disable=True)
    call = dict(
        height=size,
        width=size,
        num_frames=pipe.video_frames(initial.shape[2]),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        latents=initial,
        output_type="latent",
        return_dict=False,
    )
    if image is None:
        call.update(prompt=PROMPT, negative_prompt=NEGATIVE)
    else:
        call.update(
            image=Image.open(image).convert("RGB"),
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
        )
    return reference(**call)[0], reference


@pytest.mark.parametrize("name", ["i2v21", "i2v22", "a14b", "ti2v"])
@torch.no_grad()
def test_one_block_equals_diffusers(dirs, name):
    torch.set_num_threads(1)
    pipe = load_video_pipeline(dirs[name])
    size = 64 if name == "ti2v" else SIZE
    image = str(dirs["image"]) if pipe.takes_image else None
    config = dict(frames=2, block_frames=2, context_frames=1, steps=4, seed=11, guidance_scale=3.0)
    got = run_wan(pipe, config, image, size=size)
    channels, height, width = pipe.latent_shape(size, size)
    initial = block_noise(noise_template(11, (channels, 2, height, width)), 11, 0)
    expected, reference = _diffusers_latents(dirs[name], pipe, initial, 4, 3.0, size, image)
    torch.testing.assert_close(got["timesteps"], reference.scheduler.timesteps.cpu())
    diff = (got["latents"][0] - expected).abs().max().item()
    torch.testing.assert_close(got["latents"][0], expected, atol=1e-4, rtol=1e-4)
    print(f"Wan {name}, 1 block, g=3 vs {pipe.pipeline_class}: max abs diff {diff:.2e}")
    if isinstance(pipe.transformer, WanExperts):  # the schedule crosses the boundary: both experts ran
        boundary = BOUNDARY_RATIO * 1000
        assert (got["timesteps"] >= boundary).any() and (got["timesteps"] < boundary).any()
        assert pipe.transformer.boundary_timestep == boundary
    if name == "i2v21":  # the image matters (CLIP tokens and first-frame latent)
        other = run_wan(pipe, config, str(dirs["other"]), size=size)
        assert not torch.allclose(other["latents"][0], got["latents"][0], atol=1e-3)
    if name == "ti2v":
        assert (channels, height, width) == (8, 4, 4) and pipe.vae_scale_factor == 16


@torch.no_grad()
def test_i2v_blocks_take_diffusers_conditioning_up_to_the_horizon(dirs):
    """Blocks 1 to m get the conditioning diffusers gives those frames of the whole video (the causal encoder carries
    the image into the black frames' latents); a block after m takes block m's."""
    from dataclasses import replace

    from PIL import Image

    from pipelines.families.wan import WAN
    from pipelines.families.wan.image import CONDITION_HORIZON, i2v_pipeline, image_conditioning

    torch.set_num_threads(1)
    pipe = load_video_pipeline(dirs["i2v21"])
    frames = 2
    cond = image_conditioning(pipe, str(dirs["image"]), SIZE, SIZE, frames)
    m = cond["rest"].shape[2] // frames
    assert m * frames >= CONDITION_HORIZON and cond["first"].shape[2] == frames
    reference = i2v_pipeline(pipe)
    pixels = reference.video_processor.preprocess(Image.open(dirs["image"]).convert("RGB"), height=SIZE, width=SIZE)
    total = 6 * frames  # a whole video of 6 blocks, as diffusers conditions it
    z_dim, factor = pipe.vae.config.z_dim, pipe.vae_scale_factor
    _, whole = reference.prepare_latents(
        image=pixels, batch_size=1, num_channels_latents=z_dim, height=SIZE, width=SIZE,
        num_frames=pipe.video_frames(total), dtype=torch.float32, device="cpu", generator=None,
        latents=torch.zeros(1, z_dim, total, SIZE // factor, SIZE // factor),
    )
    torch.testing.assert_close(cond["first"], whole[:, :, :frames], atol=1e-6, rtol=0)
    torch.testing.assert_close(cond["rest"][:, :, : total - frames], whole[:, :, frames:], atol=1e-6, rtol=0)
    assert not torch.allclose(whole[:, :, 2 * frames : 3 * frames], whole[:, :, frames : 2 * frames], atol=1e-3)
    # the frame plan appends block b's slice to its latent (block m's after m)
    channels, height, width = pipe.latent_shape(SIZE, SIZE)
    adapter = WAN.frame_adapter(pipe.transformer, (channels, frames, height, width), 1)
    try:
        text, _, _ = pipe.conditioning(PROMPT, NEGATIVE, 1.0)
        text, _ = pipe.condition_on_image(text, None, str(dirs["image"]), SIZE, SIZE, frames)
        step = adapter.conditions(torch.tensor([900.0]), text)
        latent = block_noise(noise_template(3, (channels, frames, height, width)), 3, 0)
        for block in (0, 1, 2, m, m + 3):
            adapter.begin_block(block)
            got = adapter.embed(latent, step)
            index = min(block, m)
            own = text["first"] if index == 0 else text["rest"][:, :, (index - 1) * frames : index * frames]
            adapter.begin_block(0)
            expected = adapter.embed(latent, replace(step, frame_condition=(own, step.frame_condition[1])))
            assert torch.equal(got, expected), block
    finally:
        adapter.remove()


def test_i2v_two_stages_equal_one_worker(dirs):
    """Block 0 carries the image, blocks 1 and 2 the zero-mask conditioning; 2 stages equal 1 worker."""
    torch.set_num_threads(1)
    pipe = load_video_pipeline(dirs["i2v21"])
    ref = run_wan(pipe, I2V_STAGES, str(dirs["image"]))
    text, _, _ = pipe.conditioning(PROMPT, NEGATIVE, 1.0)
    cond, _ = pipe.condition_on_image(text, None, str(dirs["image"]), SIZE, SIZE, 2)
    assert cond["first"][:, :4, 0].eq(1).all() and cond["first"][:, :4, 1:].eq(0).all()
    assert cond["rest"][:, :4].eq(0).all()  # later blocks: no frame given
    ranks = run_ranks(i2v_stages, 2, str(dirs["i2v21"]), str(dirs["image"]), timeout=180)
    got = ranks[0]
    assert sorted(got["latents"]) == sorted(ref["latents"]) == [0, 1, 2]
    assert got["applied"] == ref["applied"] and not ranks[1]["latents"]
    assert ranks[0]["layers"][0] == 0 and ranks[1]["layers"][1] == 4
    diff = max((got["latents"][b] - ref["latents"][b]).abs().max().item() for b in ref["latents"])
    for block, latent in ref["latents"].items():
        torch.testing.assert_close(got["latents"][block], latent, atol=1e-4, rtol=1e-4)
    print(f"Wan 2.1 I2V, 3 blocks, 2 stages vs 1 worker: max abs diff {diff:.2e}")


def _spec(model, **extra) -> VideoSpec:
    fields = dict(model=str(model), frames=16, block_frames=8, height=SIZE, width=SIZE, steps=2)
    return VideoSpec.from_dict({**fields, **extra, "parallel": {"strategy": "none", "degree": 1}})


def test_spec_refuses_bad_images(dirs, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    cases = [
        (dirs["i2v21"], {}, "image-to-video"),
        (dirs["i2v21"], {"image": str(tmp_path / "missing.png")}, "no such file"),
        (dirs["i2v21"], {"image": str(tmp_path)}, "is a directory"),
        (dirs["i2v21"], {"image": str(not_image)}, "not an image"),
        (dirs["i2v21"], {"image": "/tmp/" + "a" * 300 + ".png"}, "cannot be read: File name too long"),
        (dirs["a14b"], {"image": str(dirs["image"])}, "takes no image"),
        (dirs["ti2v"], {"height": 48}, "multiples of 32"),
    ]
    for model, extra, why in cases:
        with pytest.raises(SpecError, match=why) as caught:
            _spec(model, **extra)
        assert caught.value.field == ("height" if model == dirs["ti2v"] else "image")
    spec = _spec(dirs["i2v22"], image=str(dirs["image"]))
    assert spec.image == str(dirs["image"].resolve())


@torch.no_grad()
def test_two_expert_segments_equal_diffusers(dirs, tmp_path):
    """A one-block A14B video as the service runs it: the high-noise steps in one session, the state at that tick
    checkpointed (as the controller stores it), the low-noise steps in a fresh session from a fresh load (another
    worker) equal the two-expert WanPipeline from the same initial latents."""
    import io

    from runtime.jobs.video_session import VideoSession
    from runtime.jobs.video_state import merge_stage_states

    torch.set_num_threads(1)
    model = str(dirs["a14b"])
    render = dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=3.0, frames=8, block_frames=8, steps=4)
    spec = _spec(model, **render, context_frames=4, seed=13)
    assert spec.segment_ends() == [2, 4] and spec.segment_from(0).until == 2 and spec.segment_from(2).until == 4
    longer = _spec(model, **dict(render, frames=16), context_frames=4)
    assert longer.segment_ends() == [longer.progress_total()]  # two blocks in one queue: one segment
    assert _spec(dirs["ti2v"], **dict(render, height=64, width=64)).segment_ends() == [4]

    finished = {}
    first = VideoSession(load_video_pipeline(model), spec, None, video_path=str(tmp_path / "a.mp4"))
    assert first.advance(2) == 2 and not first.pipeline.finished
    state = merge_stage_states([first.snapshot()])
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # as the controller reads checkpoint.pt
    pipe = load_video_pipeline(model)
    second = VideoSession(pipe, spec, None, video_path=str(tmp_path / "b.mp4"))
    second.resume(state)
    write = second.pipeline.on_block_done
    second.pipeline.on_block_done = lambda block, latent: (finished.__setitem__(block, latent.clone()), write(block, latent))
    assert second.advance() == 4
    second.finish()
    channels, height, width = pipe.latent_shape(SIZE, SIZE)
    initial = block_noise(noise_template(13, (channels, 2, height, width)), 13, 0)
    expected, reference = _diffusers_latents(dirs["a14b"], pipe, initial, 4, 3.0, SIZE)
    assert (reference.scheduler.timesteps[:2] >= BOUNDARY_RATIO * 1000).all()
    assert (reference.scheduler.timesteps[2:] < BOUNDARY_RATIO * 1000).all()
    diff = (finished[0] - expected).abs().max().item()
    torch.testing.assert_close(finished[0], expected, atol=1e-4, rtol=1e-4)
    print(f"Wan A14B, 1 block as 2 step segments (2 + 2 steps) vs WanPipeline: max abs diff {diff:.2e}")


def test_whole_video_plans_accepted_for_two_expert_and_image_models(dirs):
    """Wan's whole-video plans (sequence, patch) take the two-expert and image-to-video layouts
    (``test_wan22_whole_video.py`` renders them), and ``auto`` weighs them."""
    for name, extra in (("a14b", {}), ("i2v21", {"image": str(dirs["image"])})):
        for strategy in ("sequence", "patch"):
            spec = VideoSpec.from_dict(
                dict(model=str(dirs[name]), frames=16, block_frames=8, height=SIZE, width=SIZE, steps=2, **extra,
                     parallel={"strategy": strategy, "degree": 2})
            )
            assert (spec.parallel.strategy, spec.blocks) == (strategy, 1)
        spec = VideoSpec.from_dict(
            dict(model=str(dirs[name]), frames=16, block_frames=8, height=SIZE, width=SIZE, steps=2, **extra,
                 parallel={"strategy": "auto", "degree": "auto"})
        )
        choice = spec.auto_choice(spec.model, 2, None)
        assert {"sequence", "patch"} <= {plan["strategy"] for plan in choice["considered"]}


@torch.no_grad()
def test_ti2v_blocks_decode_as_the_whole_video(dirs):
    """TI2V-5B's VAE (residual, a patch of 2 unpatchified after decoding) streamed block by block with its cache
    carried over decodes what ``vae.decode`` gives the whole latent video (diffusers' own decode, as WanPipeline's)."""
    from pipelines.families.wan.decode import denormalize

    torch.set_num_threads(1)
    pipe = load_video_pipeline(dirs["ti2v"])
    latent = torch.randn(1, 8, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    whole = pipe.vae.decode(denormalize(pipe.vae, latent), return_dict=False)[0].clamp(-1, 1)
    decoder = pipe.block_decoder()
    streamed = torch.cat([decoder.decode(latent[:, :, :2]), decoder.decode(latent[:, :, 2:])], dim=2)
    assert streamed.shape == whole.shape == (1, 3, pipe.video_frames(4), 64, 64)
    diff = (streamed - whole).abs().max().item()
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)
    print(f"Wan TI2V, 2 blocks decoded in turn vs the whole decode: max abs diff {diff:.2e}")
