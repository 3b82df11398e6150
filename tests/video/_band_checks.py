"""The checks the video families' band tests share, on real gloo processes (see _parallel_dist)."""

from __future__ import annotations

import torch
from _parallel_dist import run_ranks
from _video_workers import render_session, render_sessions

from cluster.jobs.video import VideoParallelSpec


def band_fields(video: dict, strategy: str, degree: int, **parallel) -> dict:
    """A render's fields in float32 with its parallel spec."""
    return dict(video, dtype="float32", parallel=VideoParallelSpec(strategy, degree, **parallel))


def check_two_workers_sync_and_displaced(
    name: str, model_dir: str, video: dict, reference: torch.Tensor, out_dir: str, bands: list[tuple[int, int]]
) -> None:
    """Sync bands on 2 workers equal ``reference`` (one worker, the whole video as one block) and hold ``bands`` (latent
    rows), having exchanged K/V; displaced bands (warm-up 1 of the steps) differ from it, but not by much."""
    renders = [
        (model_dir, out_dir, band_fields(video, "patch", 2)),
        (model_dir, out_dir, band_fields(video, "patch", 2, mode="displaced", warmup_steps=1)),
    ]
    got, other = run_ranks(render_sessions, 2, renders, timeout=240)
    sync, displaced = got[0], got[1]
    diff = (sync["latents"][0] - reference).abs().max().item()
    print(f"{name} patch sync (2 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(sync["latents"][0], reference, atol=1e-4, rtol=1e-4)
    report = sync["report"]["bands"]
    assert report["mode"] == "sync" and report["bands"] == bands and any(report["bytes_sent"].values())
    assert sync["report"]["blocks"] == 1 and not other[0]["latents"]
    diff = (displaced["latents"][0] - reference).abs().max().item()
    print(f"{name} patch displaced (warmup 1 of {video['steps']} steps) vs 1 worker: max abs diff {diff:.2e}")
    assert displaced["report"]["bands"]["mode"] == "displaced" and 0 < diff < 0.5 * reference.abs().max().item()


def check_three_workers_sync(
    name: str, model_dir: str, video: dict, reference: torch.Tensor, out_dir: str, bands: list[tuple[int, int]]
) -> None:
    """Sync bands on 3 workers equal ``reference`` and hold ``bands``."""
    got = run_ranks(render_session, 3, model_dir, out_dir, band_fields(video, "patch", 3), timeout=240)
    diff = (got[0]["latents"][0] - reference).abs().max().item()
    print(f"{name} patch sync (3 workers) vs 1 worker: max abs diff {diff:.2e}")
    torch.testing.assert_close(got[0]["latents"][0], reference, atol=1e-4, rtol=1e-4)
    assert got[0]["report"]["bands"]["bands"] == bands


def check_ulysses_refusals(base: dict) -> None:
    """A family's own Ulysses (a 6-head tiny model) at submit: 3 workers accepted; 4 (not dividing the heads), a Ring
    degree and the displaced mode refused, each naming its field."""
    import pytest

    from cluster.errors import SpecError
    from cluster.jobs.video import VideoSpec

    assert VideoSpec.from_dict({**base, "parallel": {"strategy": "sequence", "degree": 3}}).parallel.degree == 3
    for parallel, field in (
        ({"strategy": "sequence", "degree": 4}, "parallel.degree"),
        ({"strategy": "sequence", "degree": 2, "ring": 2}, "parallel.ring"),
        ({"strategy": "sequence", "degree": 2, "mode": "displaced"}, "parallel.mode"),
    ):
        with pytest.raises(SpecError) as err:
            VideoSpec.from_dict({**base, "parallel": parallel})
        assert err.value.field == field, parallel
