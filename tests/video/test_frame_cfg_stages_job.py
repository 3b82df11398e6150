"""A guided video job on 4 workers as 2 guidance branches x 2 frame stages (``parallel=frames, degree=4, cfg=true``)
through the controller (real Ray, real SQLite, the built-in video model at a tiny size): it writes one worker's
video up to float rounding, and killed mid-render it resumes from the checkpoint merged from all four workers and
writes the video the uninterrupted job writes."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import ray
from _video_jobs import decoded_frames, video_client, video_spec, wait_for_tick

pytestmark = pytest.mark.slow

GUIDED = dict(negative_prompt="blurry", guidance_scale=3.0)
SPLIT = {"strategy": "frames", "degree": 4, "cfg": True}


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    with video_client(tmp_path_factory.mktemp("cfg-stages-jobs") / "state", workers=4) as client:
        yield client
    # a fresh cluster for the next module: this controller's metrics of workers 2 and 3 would stay on the shared
    # cluster's metrics endpoint, where the HTTP API's module counts its own 2 workers' (tests/test_http_api.py)
    ray.shutdown()


def test_two_branches_of_two_stages_survive_a_killed_worker(client, tmp_path):
    one = client.submit(video_spec(tmp_path / "one", parallel={"strategy": "none", "degree": 1}, **GUIDED))
    whole = client.submit(video_spec(tmp_path / "split", parallel=SPLIT, **GUIDED))
    assert one.wait(timeout_s=300)["state"] == "succeeded" and whole.wait(timeout_s=300)["state"] == "succeeded"
    meta = json.loads(open(whole.status()["outputs"]["metadata"]).read())
    assert (meta["degree"], meta["stages"]) == (4, 2)
    assert [w["cfg"]["branch"] for w in meta["workers"]] == ["cond", "cond", "uncond", "uncond"]
    assert [w["stage"] for w in meta["workers"]] == [0, 1, 2, 3]  # the worker's rank in the job's group
    assert [w["decode_cpu_s"] > 0 for w in meta["workers"]] == [True, True, False, False]  # a per-frame VAE's shares
    levels = np.abs(decoded_frames(whole.status()).astype(int) - decoded_frames(one.status()).astype(int))
    assert levels.mean() < 0.5, levels.max()  # latents within 1e-5 (tests/video/test_frame_cfg_stages.py)

    job = client.submit(video_spec(tmp_path / "killed", parallel=SPLIT, **GUIDED))
    wait_for_tick(job, 4, checkpoint=True)
    pids = [info["pid"] for info in ray.get(client.controller.info.remote())["pool"]]
    os.kill(pids[2], signal.SIGKILL)  # the unconditional branch's first stage
    final = job.wait(timeout_s=300)
    logs = job.logs()
    assert final["state"] == "succeeded" and final["attempts"] == 2 and "worker died" in logs, logs
    np.testing.assert_array_equal(decoded_frames(final), decoded_frames(whole.status()))
