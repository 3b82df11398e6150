"""LTX-Video's block decode in windows (``decode_context``): with context on both sides the block-wise video
approaches the whole decode (equal up to float rounding at the decoder's full reach), every call returns the
frames ``block_video_frames`` counts for it (none while a block is held back), and a decoder continued from its
exported state returns what the uninterrupted one returns. Tiny diffusers LTX VAE, random latents."""

from __future__ import annotations

import io
import math

import pytest
import torch
from _tiny_ltx import save_tiny_ltx

from pipelines.families import family_for_dir
from runtime.jobs.video_session import block_video_frames

LATENT_FRAMES = 24


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_ltx(tmp_path_factory.mktemp("ltx-decode") / "ltx")


@pytest.fixture(scope="module")
def pipe(model_dir):
    torch.set_num_threads(1)
    return family_for_dir(model_dir).load(model_dir, "float32", "cpu")


@pytest.fixture(scope="module")
def latent_and_whole(pipe):
    from diffusers import LTXPipeline

    vae = pipe.vae
    latent = torch.randn(1, 8, LATENT_FRAMES, 2, 2, generator=torch.Generator().manual_seed(0))
    z = LTXPipeline._denormalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    with torch.no_grad():
        whole = vae.decode(z, torch.tensor([0.0]), return_dict=False)[0].clamp(-1, 1)
    return latent, whole


def _blockwise(decoder, latent: torch.Tensor, block: int) -> list[torch.Tensor]:
    return [decoder.decode(latent[:, :, i : i + block]) for i in range(0, latent.shape[2], block)]


def _psnr(video: torch.Tensor, whole: torch.Tensor) -> float:
    error = (video - whole).pow(2).mean().item()
    return 10 * math.log10(4 / error) if error else math.inf


@pytest.mark.parametrize("block", [2, 4])
def test_context_brings_the_blocks_to_the_whole_decode(pipe, latent_and_whole, block):
    latent, whole = latent_and_whole
    psnr = {}
    for context in (0, 8, 16):
        parts = _blockwise(pipe.block_decoder(video_latent_frames=LATENT_FRAMES, context=context), latent, block)
        counts = [part.shape[2] for part in parts]
        assert counts == [
            block_video_frames(pipe, block, b, LATENT_FRAMES, context) for b in range(LATENT_FRAMES // block)
        ]
        if context:  # the first blocks wait for the frames after them
            assert counts[: context // block] == [0] * (context // block) and counts[context // block] > 0
        video = torch.cat(parts, dim=2)
        assert video.shape == whole.shape
        psnr[context] = _psnr(video, whole)
        if context == 16:  # the tiny decoder's whole reach: the whole decode up to float rounding
            torch.testing.assert_close(video, whole, atol=1e-5, rtol=0)
    print(f"LTX decode, blocks of {block} latent frames, PSNR vs whole by context: {psnr}")
    assert psnr[0] < 25 and psnr[8] > 60  # 8 each way: under a quarter of a uint8 step


def test_a_decoder_continued_from_its_state_returns_the_same_frames(pipe, latent_and_whole):
    latent, _ = latent_and_whole
    block, stop = 4, 3  # stopped while holding blocks back
    reference = _blockwise(pipe.block_decoder(video_latent_frames=LATENT_FRAMES, context=8), latent, block)
    first = pipe.block_decoder(video_latent_frames=LATENT_FRAMES, context=8)
    before = [first.decode(latent[:, :, i * block : (i + 1) * block]) for i in range(stop)]
    buffer = io.BytesIO()
    torch.save(first.export_state(), buffer)  # as a checkpoint keeps it
    buffer.seek(0)
    resumed = pipe.block_decoder(video_latent_frames=LATENT_FRAMES, context=8)
    resumed.load_state(torch.load(buffer, weights_only=True))
    after = [resumed.decode(latent[:, :, i : i + block]) for i in range(stop * block, LATENT_FRAMES, block)]
    assert [p.shape[2] for p in before + after] == [p.shape[2] for p in reference]
    for got, expected in zip(before + after, reference):
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_a_checkpoint_of_the_decoder_before_windows_continues(pipe, latent_and_whole):
    """A checkpoint written before the decoder held frames back (``cache`` = [last latent frame, frames decoded])
    continues with the previous latent frame as context, as that decoder would have."""
    latent, _ = latent_and_whole
    old = {"first": False, "cache": [latent[:, :, 3:4].clone(), 4]}
    decoder = pipe.block_decoder(video_latent_frames=8, context=0)
    decoder.load_state(old)
    continued = decoder.decode(latent[:, :, 4:8])
    fresh = pipe.block_decoder(video_latent_frames=8, context=0)
    fresh.decode(latent[:, :, :4])
    torch.testing.assert_close(continued, fresh.decode(latent[:, :, 4:8]), atol=1e-6, rtol=0)


def test_the_job_field_is_checked_at_submit(model_dir):
    from cluster.errors import SpecError
    from cluster.jobs.video import VideoSpec

    fields = dict(model=str(model_dir), height=64, width=64, frames=48, block_frames=16, context_frames=8)
    assert VideoSpec.from_dict(fields).decode_context is None  # the family's default
    assert VideoSpec.from_dict(dict(fields, decode_context=16)).decode_context == 16
    for value, words in ((-1, "must be in [0, 64]"), (2.5, "expected int")):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict(dict(fields, decode_context=value))
        assert err.value.field == "decode_context" and words in str(err.value)
    with pytest.raises(SpecError) as err:  # a VAE with its state across blocks takes none
        VideoSpec.from_dict(dict(frames=16, block_frames=4, height=32, width=32, decode_context=4))
    assert err.value.field == "decode_context" and "takes no decode context" in str(err.value)
