"""A cached render through the pool: metadata.json's cache record, and a cached job stopped mid-way and
resumed (on one worker, and moved to two row bands) equals the uninterrupted cached job: the stop hands out the
state from just before the last full step, so the resumed job rebuilds the cache and takes the same decisions."""

from __future__ import annotations

import pytest
import torch
from _tiny_flux import save_tiny_flux

from cluster.jobs.image import RenderSpec
from runtime.jobs.driver import JobStopped
from runtime.jobs.image import run_render

STEPS = 10


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-cache") / "tiny-flux")


def _spec(model_dir, threshold: float, true_cfg_scale: float = 1.0, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "model": str(model_dir),
            "height": 64,
            "width": 48,
            "steps": STEPS,
            "seed": 3,
            "negative_prompt": "blurry",
            "true_cfg_scale": true_cfg_scale,
            "cache": {"mode": "first-block", "threshold": threshold},
            "parallel": parallel or {"strategy": "none"},
        }
    )


@pytest.fixture(scope="module")
def uninterrupted(pool2, flux_dir):
    """The changes measured with nothing reused, a threshold among them, and the cached job at it."""
    measured = run_render(pool2, _spec(flux_dir, 1e-9), progress=False, decode=False)
    changes = sorted(measured.metadata["cache"]["changes"].values())
    threshold = (changes[len(changes) // 2 - 1] + changes[len(changes) // 2]) / 2
    cached = run_render(pool2, _spec(flux_dir, threshold), progress=False, decode=False)
    return threshold, cached


def test_metadata_records_the_full_and_the_reusing_steps(uninterrupted):
    _, cached = uninterrupted
    record = cached.metadata["cache"]
    assert record["mode"] == "first-block" and record["reused_steps"]
    assert sorted(record["full_steps"] + record["reused_steps"]) == list(range(STEPS))


def _stopped_at(pool, spec, after: int) -> dict:
    with pytest.raises(JobStopped) as stopped:
        run_render(pool, spec, progress=False, decode=False, on_step=lambda done: done < after)
    return stopped.value.checkpoint


@pytest.mark.parametrize("resume_on", [{"strategy": "none"}, {"strategy": "patch", "degree": 2, "mode": "sync"}])
def test_a_stopped_cached_job_resumes_to_the_uninterrupted_result(pool2, flux_dir, uninterrupted, resume_on):
    threshold, cached = uninterrupted
    full_steps = cached.metadata["cache"]["full_steps"]
    state = _stopped_at(pool2, _spec(flux_dir, threshold), after=6)
    assert state["step_index"] in full_steps  # the state from just before a full step
    resumed = run_render(pool2, _spec(flux_dir, threshold, **resume_on), progress=False, decode=False, resume=state)
    record = resumed.metadata["cache"]
    assert record["full_steps"] + record["reused_steps"] and record["full_steps"][0] == state["step_index"]
    assert set(record["reused_steps"]) == {s for s in cached.metadata["cache"]["reused_steps"] if s >= state["step_index"]}
    torch.testing.assert_close(resumed.latents, cached.latents, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "parallel",
    [{"strategy": "patch", "degree": 2, "mode": "sync", "cfg": True}, {"strategy": "sequence", "degree": 2}],
    ids=["cfg-halves", "ulysses"],
)
def test_guidance_halves_and_sequence_shards_take_one_workers_decisions(pool2, flux_dir, parallel):
    """Each CFG partner sees one branch, each Ulysses rank a shard of the tokens: the change summed over the
    group is one worker's (both branches batched, every token), so the decisions and the result are too."""
    measured = run_render(pool2, _spec(flux_dir, 1e-9, true_cfg_scale=4.0), progress=False, decode=False)
    changes = sorted(measured.metadata["cache"]["changes"].values())
    threshold = (changes[len(changes) // 2 - 1] + changes[len(changes) // 2]) / 2
    one = run_render(pool2, _spec(flux_dir, threshold, true_cfg_scale=4.0), progress=False, decode=False)
    split = run_render(pool2, _spec(flux_dir, threshold, true_cfg_scale=4.0, **parallel), progress=False, decode=False)
    assert one.metadata["cache"]["reused_steps"]
    assert [w["cache_reused_steps"] for w in split.metadata["workers"]] == [one.metadata["cache"]["reused_steps"]] * 2
    torch.testing.assert_close(split.latents, one.latents, atol=1e-4, rtol=1e-4)


def _builtin(interval: int, **parallel) -> RenderSpec:
    return RenderSpec.from_dict(
        {
            "height": 128,
            "width": 64,
            "steps": STEPS,
            "seed": 2,
            "cache": {"mode": "deepcache", "interval": interval},
            "parallel": parallel or {"strategy": "none"},
        }
    )


def test_a_stopped_deepcache_job_resumes_on_two_bands_to_the_uninterrupted_result(pool2):
    cached = run_render(pool2, _builtin(3), progress=False, decode=False)
    record = cached.metadata["cache"]
    assert record["mode"] == "deepcache" and record["reused_steps"]
    state = _stopped_at(pool2, _builtin(3), after=5)
    assert state["step_index"] in record["full_steps"]
    resumed = run_render(pool2, _builtin(3, strategy="patch", degree=2, mode="sync"), progress=False, decode=False, resume=state)
    assert resumed.metadata["cache"]["reused_steps"] == [s for s in record["reused_steps"] if s >= state["step_index"]]
    torch.testing.assert_close(resumed.latents, cached.latents, atol=1e-4, rtol=1e-4)
