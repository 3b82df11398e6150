"""LTX-Video with ``parallel.strategy=sequence``: the whole video as one sequence, each forward split over 2
workers by diffusers' context parallelism (LTX's ``_cp_plan``, Ulysses; real gloo processes), equals one worker
rendering it; the prompt's padding mask, which diffusers' LTX processor cannot split (it repeats the mask per
head), runs through the family's processor; what does not divide is refused at submit."""

from __future__ import annotations

import pytest
import torch
from _ltx_workers import ltx_session
from _parallel_dist import run_ranks
from _tiny_ltx import save_tiny_ltx

from cluster.errors import SpecError
from cluster.jobs.video import VideoSpec

FIELDS = dict(
    prompt="red circle on green",
    negative_prompt="blurry",
    guidance_scale=3.0,
    height=64,
    width=64,
    frames=24,  # 3 latent frames x 2 x 2: 12 video tokens, 12 prompt tokens, 2 heads
    steps=3,
    seed=8,
    parallel={"strategy": "sequence", "degree": 2},
)


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_tiny_ltx(tmp_path_factory.mktemp("ltx") / "tiny-ltx")


def test_two_workers_equal_one(ltx_dir, tmp_path):
    torch.set_num_threads(1)
    one = dict(FIELDS, parallel={"strategy": "none", "degree": 1}, block_frames=24, context_frames=0)
    ref = ltx_session(0, 1, str(ltx_dir), str(tmp_path), one)
    got, other = run_ranks(ltx_session, 2, str(ltx_dir), str(tmp_path), FIELDS, timeout=180)
    assert sorted(ref["latents"]) == sorted(got["latents"]) == [0] and not other["latents"]
    diff = (got["latents"][0] - ref["latents"][0]).abs().max().item()
    print(f"LTX sequence (Ulysses 2) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got["latents"][0], ref["latents"][0], atol=1e-4, rtol=1e-4)
    for report in (got["report"], other["report"]):
        assert report["sequence"]["ulysses"] == 2 and report["blocks"] == 1
        assert report["sequence"]["bytes_sent"]["all_to_all"]  # the forward really was split
    assert got["report"]["frames_written"] == 17 == ref["report"]["frames_written"]
    # the workers gave the model back as they found it: no parallel config, diffusers' own processor
    assert got["parallel"] is None and got["processors"] == {"LTXVideoAttnProcessor"}


def test_refused_at_submit(ltx_dir):
    spec = VideoSpec.from_dict({"model": str(ltx_dir), **FIELDS})
    assert (spec.block_frames, spec.context_frames, spec.blocks) == (24, 0, 1) and spec.notes
    for change, field in (
        (dict(parallel={"strategy": "sequence", "degree": 3}), "parallel.degree"),  # 2 heads
        (dict(parallel={"strategy": "sequence", "degree": "auto"}), "parallel.degree"),
        (dict(parallel={"strategy": "sequence", "degree": 1}), "parallel.degree"),
        (dict(parallel={"strategy": "sequence", "degree": 2, "ring": 2}), "parallel.ring"),  # its prompt mask
        (dict(max_sequence_length=15), "max_sequence_length"),  # the prompt's tokens are split too
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({"model": str(ltx_dir), **FIELDS, **change})
        assert err.value.field == field
    with pytest.raises(SpecError, match="video tokens"):  # 3 x 1 x 3 = 9 video tokens
        VideoSpec.from_dict({"model": str(ltx_dir), **FIELDS, "height": 32, "width": 96})
