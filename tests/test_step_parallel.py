"""Step parallelism (``parallel.strategy=steps``, ParaStep) through the pool: with every step a warm-up step it is
one worker's render exactly; with rounds it stays close to it, exchanging one noise per worker per round (what the
cost model predicts); a job stopped in the middle of a round resumes to the uninterrupted result; bad settings are
refused naming the field."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from parallel.cache.calibrate import group_psnr
from parallel.cost.traffic import steps_traffic
from runtime.jobs.driver import JobStopped
from runtime.jobs.image import run_render

STEPS = 10


def _spec(warmup_steps: int = 2, **parallel) -> RenderSpec:
    par = {"strategy": "steps", "degree": 2, "warmup_steps": warmup_steps, **parallel}
    return RenderSpec.from_dict({"height": 64, "width": 64, "steps": STEPS, "seed": 4, "sampler": "euler", "parallel": par})


@pytest.fixture(scope="module")
def one_worker(pool2):
    spec = RenderSpec.from_dict({"height": 64, "width": 64, "steps": STEPS, "seed": 4, "sampler": "euler"})
    return run_render(pool2, spec, progress=False, decode=False)


def test_all_warmup_steps_is_one_workers_render(pool2, one_worker):
    result = run_render(pool2, _spec(warmup_steps=STEPS), progress=False, decode=False)
    assert result.metadata["strategy"] == "steps"
    torch.testing.assert_close(result.latents, one_worker.latents, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def rounds(pool2):
    return run_render(pool2, _spec(), progress=False, decode=False)


def test_rounds_stay_close_to_one_worker_and_send_one_noise_per_round(rounds, one_worker):
    quality = group_psnr(rounds.latents, one_worker.latents)
    assert 20 < quality < float("inf"), quality  # approximate, and close
    workers = rounds.metadata["workers"]
    latent_bytes = one_worker.latents.numel() * one_worker.latents.element_size()
    sent = workers[0]["bytes_sent_by_kind_and_peer"]["noise"]
    assert list(sent.values()) == [latent_bytes * 4]  # 4 rounds of 2 steps after 2 warm-up steps, to the one peer
    profile = SimpleNamespace(output_bytes=latent_bytes, latent_bytes=latent_bytes)  # what steps_traffic reads
    predicted = steps_traffic(profile, 2).bytes_per_step["noise"]
    assert predicted * 8 == latent_bytes * 4  # the cost model's bytes per step over the 8 steps in rounds


def test_a_job_stopped_inside_a_round_resumes_to_the_uninterrupted_result(pool2, rounds):
    with pytest.raises(JobStopped) as stopped:
        run_render(pool2, _spec(), progress=False, decode=False, on_step=lambda done: done < 4)
    state = stopped.value.checkpoint
    assert state["parastep"]["pending"], state["step_index"]  # inside a round: its gathered noises travel too
    resumed = run_render(pool2, _spec(), progress=False, decode=False, resume=state)
    torch.testing.assert_close(resumed.latents, rounds.latents, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"parallel": {"strategy": "steps", "degree": 1}}, "parallel.degree"),
        ({"parallel": {"strategy": "steps", "degree": "auto"}}, "parallel.degree"),
        ({"parallel": {"strategy": "steps", "degree": 2, "cfg": True}}, "parallel.cfg"),
        ({"parallel": {"strategy": "steps", "degree": 2}, "cache": {"mode": "deepcache"}}, "cache.mode"),
    ],
)
def test_bad_step_parallel_settings_are_named(change, field):
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"height": 64, "width": 64, **change})
    assert caught.value.field == field
