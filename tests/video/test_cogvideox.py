"""CogVideoX (1.0 and 1.5 configs) as a video family: equal to diffusers' CogVideoXPipeline on one block, the frame
pipeline on 2 and 3 stages equal to one worker, its VAE streamed block by block, its submit-time checks.

The tiny pipelines (``_tiny_cogvideox``) are built with diffusers' and transformers' own classes and saved with
``save_pretrained``; 1.0 runs the DDIM scheduler, 1.5 the stochastic DPM one (per-block generator).
"""

from __future__ import annotations

import pytest
import torch
from _parallel_dist import run_ranks
from _tiny_cogvideox import TEXT_TOKENS, Z_DIM, save_tiny_cogvideox, tiny_transformer
from _video_workers import render_session, render_sessions

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec
from parallel.frames.noise import block_noise, block_step_seed, noise_template
from pipelines.families import family_for_dir
from pipelines.families.cogvideox.decode import CogVideoXBlockDecoder
from pipelines.families.cogvideox.frames import CogVideoXFrameAdapter, rotary_embedding

VERSIONS = {"1.0": "ddim", "1.5": "dpm"}
SIZE = 32
"""Frame height and width in pixels (8 x 8 latent, 4 x 4 tokens)."""
TASK = dict(
    dtype="float32",
    prompt="red and yellow stripes",
    negative_prompt="blurry",
    height=SIZE,
    width=SIZE,
    steps=3,
    seed=4,
    fps=8.0,
)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox")
    return {v: str(save_tiny_cogvideox(root / f"cogvideox-{v}", v, s)) for v, s in VERSIONS.items()}


@pytest.mark.parametrize("version", ["1.0", "1.0-rotary", "1.5"])
@torch.no_grad()
def test_adapter_pieces_equal_the_model(version):
    """embed, conditions, every block and head in sequence (no context) equal model(...) on one block."""
    torch.set_num_threads(1)
    model = tiny_transformer(version)
    frames, size = 4, SIZE // 4
    latent = torch.randn(2, Z_DIM, frames, size, size, generator=torch.Generator().manual_seed(1))
    text = torch.randn(2, TEXT_TOKENS, 32, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([700.0])
    rope = rotary_embedding(model, size, size, frames, "cpu") if version != "1.0" else None
    expected = model(latent.transpose(1, 2), text, t.expand(2), image_rotary_emb=rope, return_dict=False)[0]
    adapter = CogVideoXFrameAdapter(model, (Z_DIM, frames, size, size), 0)
    cond = adapter.conditions(t, text)
    adapter.begin_block(0)
    hidden = adapter.embed(latent, cond)
    assert hidden.shape == adapter.hidden_shape(2, cond)
    for layer in range(adapter.num_layers):
        hidden = adapter.run_layer(layer, hidden, cond)
    got = adapter.head(hidden, cond)
    adapter.remove()
    torch.testing.assert_close(got, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("version", ["1.0-rotary", "1.5"])
def test_neighbour_keys_rotate_to_their_offsets_across_the_border(version):
    """A block sits at temporal positions 0..F-1 (the pipeline's own rotary embedding for one block); the previous
    block's cached keys at -c..-1 and the next block's at F..F+c-1, spatial positions unchanged."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    model = tiny_transformer(version, layers=1)
    adapter = CogVideoXFrameAdapter(model, (Z_DIM, 4, 8, 8), 4 if version == "1.5" else 2)
    adapter.remove()
    dim_t, tokens = model.config.attention_head_dim // 4, adapter.frame_tokens
    context, frames = adapter.context_tokens // tokens, adapter.video_tokens // tokens
    assert context == 2
    torch.testing.assert_close(adapter.rope_own, rotary_embedding(model, 8, 8, 4, "cpu"), atol=0, rtol=0)
    for (cos, sin), positions in ((adapter.rope_prev, range(-context, 0)), (adapter.rope_next, range(frames, frames + context))):
        t_cos, t_sin = get_1d_rotary_pos_embed(dim_t, torch.tensor(list(positions), dtype=torch.float32), use_real=True)
        torch.testing.assert_close(cos[:, :dim_t], t_cos.repeat_interleave(tokens, 0))
        torch.testing.assert_close(sin[:, :dim_t], t_sin.repeat_interleave(tokens, 0))
        torch.testing.assert_close(sin[:, dim_t:], adapter.rope_own[1][: context * tokens, dim_t:])


@pytest.mark.parametrize("guidance", [1.0, 4.0])
@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_one_block_equals_the_diffusers_pipeline(dirs, tmp_path, version, guidance):
    """One block on one worker equals CogVideoXPipeline(latents=..., output_type="latent") from the same latents
    (and, for the DPM scheduler, the same generator for its per-step noise)."""
    from diffusers import CogVideoXPipeline

    torch.set_num_threads(1)
    # context frames shift a lone block's rotary positions (by the context): its attention depends on offsets only
    task = dict(TASK, guidance_scale=guidance, frames=16, block_frames=16, context_frames=4 if guidance > 1 else 0)
    got = render_session(0, 1, dirs[version], str(tmp_path), task)["latents"][0]
    seed, shape = task["seed"], (Z_DIM, 4, SIZE // 4, SIZE // 4)
    initial = block_noise(noise_template(seed, shape), seed, 0)
    reference = CogVideoXPipeline.from_pretrained(dirs[version], local_files_only=True, use_safetensors=True)
    expected = reference(
        prompt=task["prompt"],
        negative_prompt=task["negative_prompt"],
        height=SIZE,
        width=SIZE,
        num_frames=13,  # 4 latent frames: (13 - 1) // 4 + 1
        num_inference_steps=task["steps"],
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(block_step_seed(seed, 0)),
        latents=initial.transpose(1, 2),
        output_type="latent",
        # 1.0's sincos table is built for the fixture's 12 text tokens; 1.5 (rotary) takes the default 226
        **({"max_sequence_length": TEXT_TOKENS} if version == "1.0" else {}),
    ).frames
    diff = (got - expected.transpose(1, 2)).abs().max().item()
    print(f"cogvideox {version} guidance {guidance}: max abs diff {diff:.2e}")
    torch.testing.assert_close(got, expected.transpose(1, 2), atol=1e-4, rtol=1e-4)


_reference: dict[str, list] = {}


def _renders(dirs, out: str) -> list[tuple[str, str, dict]]:
    """Both configs, guided, 3 blocks of 2 latent frames with 1 latent frame of context (1.5: one token frame)."""
    task = dict(TASK, guidance_scale=3.0, frames=24, block_frames=8, context_frames=4)
    return [(dirs[v], f"{out}/{v}", task) for v in sorted(VERSIONS)]


@pytest.mark.parametrize("world", [2, 3])
def test_stages_equal_one_worker(dirs, tmp_path, world):
    torch.set_num_threads(1)
    for version in VERSIONS:
        (tmp_path / version).mkdir()
    renders = _renders(dirs, str(tmp_path))
    if "one" not in _reference:
        _reference["one"] = render_sessions(0, 1, renders)
    reference = _reference["one"]
    got = run_ranks(render_sessions, world, renders, timeout=240)[0]
    for version, ref, run in zip(sorted(VERSIONS), reference, got):
        assert sorted(run["latents"]) == sorted(ref["latents"]) == [0, 1, 2]
        diff = max((run["latents"][b] - ref["latents"][b]).abs().max().item() for b in ref["latents"])
        print(f"cogvideox {version} {world} stages: max abs diff {diff:.2e}")
        for block, latent in ref["latents"].items():
            torch.testing.assert_close(run["latents"][block], latent, atol=1e-4, rtol=1e-4)
        report = run["report"]
        assert report["frames"] == report["frames_written"] == 24 and report["latent_frames"] == 6
        assert len(report["boundaries"]) == world + 1
    if world == 2:  # the neighbours' context matters: the blocks of one video are not rendered independently
        alone = render_session(0, 1, dirs["1.5"], str(tmp_path), dict(renders[1][2], context_frames=0))
        assert not torch.allclose(alone["latents"][1], reference[1]["latents"][1], atol=1e-3)


def test_streamed_blocks_equal_decoding_the_whole_video(dirs):
    """The block decoder carries diffusers' conv cache from block to block: no seam."""
    torch.set_num_threads(1)
    vae = family_for_dir(dirs["1.0"]).load(dirs["1.0"], "float32", "cpu").vae
    latent = torch.randn(1, Z_DIM, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = vae.decode(latent / vae.config.scaling_factor).sample.clamp(-1, 1)
        decoder = CogVideoXBlockDecoder(vae)
        streamed = torch.cat([decoder.decode(latent[:, :, :2]), decoder.decode(latent[:, :, 2:])], dim=2)
        restored = CogVideoXBlockDecoder(vae)
        restored.decode(latent[:, :, :2])
        resumed = CogVideoXBlockDecoder(vae)
        resumed.load_state(restored.export_state())
        after = resumed.decode(latent[:, :, 2:])
        cut = CogVideoXBlockDecoder(vae).decode(latent[:, :, 2:])  # no cache: a seam
    assert whole.shape[2] == streamed.shape[2] == 16
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after, whole[:, :, 8:], atol=1e-5, rtol=1e-5)
    mse = ((cut - whole[:, :, 8:]) / 2).pow(2).mean().item()
    print(f"cogvideox block decoded without the cache: PSNR {10 * torch.log10(torch.tensor(1 / mse)).item():.1f} dB")
    assert mse > 0


def test_blocks_of_odd_latent_frames_are_refused_at_submit(dirs):
    for version in VERSIONS:
        with pytest.raises(SpecError, match="block_frames: a CogVideoX block must hold an even number"):
            VideoSpec.from_dict(dict(model=dirs[version], frames=24, block_frames=12, height=SIZE, width=SIZE))
        spec = VideoSpec.from_dict(
            dict(model=dirs[version], frames=24, block_frames=8, height=SIZE, width=SIZE, parallel={"degree": 3})
        )
        assert spec.model_family().name == "cogvideox" and spec.max_stages() == 3
    with pytest.raises(ValueError, match="block_frames: CogVideoX's temporal patch"):
        CogVideoXFrameAdapter(tiny_transformer("1.5"), (Z_DIM, 3, 8, 8), 1)


def test_position_configs_diffusers_cannot_run_are_refused_at_submit(dirs, tmp_path):
    """A temporal patch with learned (or sincos) positions fails in diffusers' patch embedding; learned positions
    run only at the transformer's sample size, and 1.5's rotary ones up to it: all refused from the JSON, naming the
    field."""
    import json
    import shutil

    def variant(name: str, source: str, **changes) -> str:
        target = tmp_path / name
        shutil.copytree(source, target)
        config = target / "transformer" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **changes}))
        return str(target)

    patched = variant("learned-1.5", dirs["1.5"], use_learned_positional_embeddings=True)
    with pytest.raises(SpecError, match="model: .*temporal patch .* rotary positional embeddings"):
        VideoSpec.from_dict(dict(model=patched, frames=16, block_frames=8, height=SIZE, width=SIZE))
    learned = variant("learned-1.0", dirs["1.0"], use_rotary_positional_embeddings=True,
                      use_learned_positional_embeddings=True)
    with pytest.raises(SpecError, match="height: .* learned positional embeddings, .* sample size 32x32; got 64x32"):
        VideoSpec.from_dict(dict(model=learned, frames=16, block_frames=8, height=64, width=SIZE))
    VideoSpec.from_dict(dict(model=learned, frames=16, block_frames=8, height=SIZE, width=SIZE))
    # 1.5's rotary positions are sliced from a grid of the transformer's sample size: no larger frame
    with pytest.raises(SpecError, match="width: .* rotary positions reach 32 pixels .*; got width 64"):
        VideoSpec.from_dict(dict(model=dirs["1.5"], frames=16, block_frames=8, height=SIZE, width=64))
