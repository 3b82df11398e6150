"""The built-in video model's per-frame VAE decodes a block a few frames per call, to the frames of one call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.builtin import resolve_model
from pipelines.families.wan import per_frame
from pipelines.families.wan.loading import load_video_pipeline


def test_chunks_shrink_with_the_frame_size():
    assert per_frame.chunk_frames(64, 64) == per_frame.chunk_frames(512, 512) == 4
    assert per_frame.chunk_frames(512, 1024) == 2
    assert per_frame.chunk_frames(1024, 1024) == per_frame.chunk_frames(4096, 4096) == 1


@pytest.fixture(scope="module")
def pipe():
    return load_video_pipeline(resolve_model("builtin-video"))


@pytest.mark.parametrize("frames", [8, 7, 3])
def test_a_block_decodes_in_chunks_to_the_frames_of_one_call(pipe, frames, monkeypatch):
    torch.set_num_threads(1)
    latent = torch.randn(1, 4, frames, 8, 12, generator=torch.Generator().manual_seed(frames))
    calls = []
    decode = pipe.vae.decode

    def counted(z, *args, **kwargs):
        calls.append(z.shape[0])
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", counted)
    chunked = pipe.decode_block(latent)
    assert calls == [4] * (frames // 4) + ([frames % 4] if frames % 4 else [])
    monkeypatch.setattr(per_frame, "CHUNK_FRAMES", frames)
    whole = pipe.decode_block(latent)
    assert calls[-1] == frames  # the reference is one call
    assert chunked.shape == (frames, 64, 96, 3) and chunked.dtype == np.uint8
    assert np.array_equal(chunked, whole)
