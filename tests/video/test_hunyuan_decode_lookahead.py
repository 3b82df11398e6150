"""HunyuanVideo's block-by-block VAE decode (``pipelines.families.hunyuanvideo.decode``) equals diffusers'
``vae.decode`` of the whole video: blocks of 1 to 6 latent frames, holding back the family's default 4 latent frames
(what a temporal tile reaches past its own), each call returning the frames the session counts for it
(``block_video_frames``), and continuing from a checkpoint of its state. With nothing held back the tiles are cut
at the seams (the PSNR is reported)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_hunyuanvideo import LATENT_CHANNELS, save_tiny_hunyuanvideo

from pipelines.families.hunyuanvideo import HUNYUANVIDEO
from runtime.jobs.video_session import block_video_frames

LATENT_FRAMES = 12


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.set_num_threads(1)
    return HUNYUANVIDEO.load(save_tiny_hunyuanvideo(tmp_path_factory.mktemp("hunyuan") / "tiny"), "float32", "cpu")


@pytest.fixture(scope="module")
def latent():
    return torch.randn(1, LATENT_CHANNELS, LATENT_FRAMES, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def whole(parts, latent):
    vae = parts.vae
    with torch.no_grad():
        video = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
    return (parts.pipe.video_processor.postprocess_video(video, output_type="np")[0] * 255).round().astype(np.uint8)


def _streamed(parts, latent, block: int, context: int | None, resume_at: int | None = None) -> list[np.ndarray]:
    decoder = parts.block_decoder(video_latent_frames=LATENT_FRAMES, context=context)
    out = []
    for index, start in enumerate(range(0, LATENT_FRAMES, block)):
        if index == resume_at:  # a fresh decoder continues from the checkpointed state
            state = decoder.export_state()
            decoder = parts.block_decoder(video_latent_frames=LATENT_FRAMES, context=context)
            decoder.load_state(state)
        out.append(decoder(latent[:, :, start : start + block]))
    return out


@pytest.mark.parametrize("block", [1, 2, 3, 4, 6])
def test_blocks_equal_the_whole_decode(parts, latent, whole, block):
    assert HUNYUANVIDEO.decode_context == 4 and parts.vae.use_framewise_decoding
    blocks = _streamed(parts, latent, block, HUNYUANVIDEO.decode_context, resume_at=LATENT_FRAMES // block // 2)
    counts = [block_video_frames(parts, block, i, LATENT_FRAMES, HUNYUANVIDEO.decode_context) for i in range(len(blocks))]
    assert [len(b) for b in blocks] == counts and sum(counts) == len(whole) == parts.video_frames(LATENT_FRAMES)
    assert not len(blocks[0]) or block > 4  # the first blocks wait for the 4 latent frames after them
    np.testing.assert_array_equal(np.concatenate(blocks), whole)


def test_a_short_video_is_decoded_whole_at_its_end(parts, latent):
    """4 latent frames: vae.decode does not tile them; the blocks wait for the video's end, then one call."""
    vae, short = parts.vae, latent[:, :, :4]
    with torch.no_grad():
        video = vae.decode(short / vae.config.scaling_factor, return_dict=False)[0]
    expected = (parts.pipe.video_processor.postprocess_video(video, output_type="np")[0] * 255).round().astype(np.uint8)
    decoder = parts.block_decoder(video_latent_frames=4, context=4)
    blocks = [decoder(short[:, :, start : start + 2]) for start in (0, 2)]
    assert [len(b) for b in blocks] == [0, 13]
    np.testing.assert_array_equal(blocks[1], expected)


def test_nothing_held_back_cuts_the_tiles_at_the_seams(parts, latent, whole):
    blocks = _streamed(parts, latent, 2, 0)
    assert [len(b) for b in blocks] == [block_video_frames(parts, 2, i, LATENT_FRAMES, 0) for i in range(6)]
    streamed = np.concatenate(blocks)
    error = ((streamed.astype(np.float64) - whole) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(255**2 / error.mean())
    print(f"HunyuanVideo blocks of 2 latent frames, nothing held back, vs the whole decode: PSNR {psnr:.1f} dB")
    assert error[:5].any() and not error[-4:].any()  # tiles cut at every seam but the video's end


def test_without_framewise_decoding_the_video_is_decoded_whole_at_its_end(parts, latent):
    """vae.decode does not tile once use_framewise_decoding is off: every block waits, then one call."""
    vae = parts.vae
    vae.use_framewise_decoding = False
    try:
        with torch.no_grad():
            video = vae.decode(latent / vae.config.scaling_factor, return_dict=False)[0]
        expected = parts.pipe.video_processor.postprocess_video(video, output_type="np")[0]
        blocks = _streamed(parts, latent, 3, 0)
    finally:
        vae.use_framewise_decoding = True
    assert [len(b) for b in blocks] == [0, 0, 0, len(expected)]
    np.testing.assert_array_equal(blocks[-1], (expected * 255).round().astype(np.uint8))


def test_a_checkpoint_of_the_old_decoder_is_refused(parts):
    decoder = parts.block_decoder(video_latent_frames=LATENT_FRAMES, context=4)
    with pytest.raises(ValueError, match="start the job again"):
        decoder.load_state({"first": False, "cache": [torch.zeros(1, LATENT_CHANNELS, 2, 4, 4), 2]})
