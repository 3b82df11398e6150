"""Video jobs through the controller: submit and wait, pause for a more urgent job and resume, a killed
worker (real Ray, real SQLite, the built-in video model at a tiny size), also with a guidance branch per worker;
a CogVideoX directory's jobs with strategy none and on 2 frame stages; Wan 2.2 image-to-video (two experts) on 2
stages and TI2V-5B."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import numpy as np
import pytest
import ray
import torch
from _tiny_cogvideox import save_tiny_cogvideox
from _tiny_wan22 import save_test_image, save_tiny_wan_i2v, save_tiny_wan_ti2v
from _video_jobs import TICKS, decoded_frames, video_client, video_spec, wait_for_tick

from cluster.errors import SpecError
from cluster.jobs.video import VideoParallelSpec, VideoSpec
from runtime.device import device_slot
from runtime.jobs.video_session import open_video_session
from runtime.worker import Worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    with video_client(tmp_path_factory.mktemp("video-jobs") / "state", workers=2) as client:
        yield client


@pytest.fixture(scope="module")
def reference(client, tmp_path_factory):
    """An uninterrupted video job (on both workers): what every interrupted one must equal."""
    out = tmp_path_factory.mktemp("reference")
    job = client.submit(video_spec(out))
    record = job.wait(timeout_s=300)
    assert record["state"] == "succeeded", job.logs()
    return record


def test_submit_wait_result(client, reference, tmp_path):
    outputs = reference["outputs"]
    directory = outputs["directory"]
    assert sorted(os.listdir(directory)) == ["metadata.json", "video.mp4"]  # no blocks left behind
    assert not [p for p in os.listdir(os.path.dirname(directory)) if p.endswith(".partial")]
    frames = decoded_frames(reference)
    assert frames.shape == (12, 32, 32, 3)
    meta = json.loads(open(outputs["metadata"]).read())
    assert (meta["frames"], meta["blocks"], meta["stages"], meta["frames_written"]) == (12, 6, 2, 12)
    assert meta["spec"]["job"] == "video" and meta["segments"][0]["ticks"] == [0, TICKS]
    assert reference["steps_done"] == TICKS and reference["checkpoint_step"] == TICKS - 2
    # a bad video spec is refused at submit with the field's name, and nothing is stored
    store = sqlite3.connect(ray.get(client.controller.info.remote())["state_dir"] + "/jobs.sqlite")
    before = store.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    for bad, field in (
        (video_spec(tmp_path, block_frames=0), "block_frames"),
        (video_spec(tmp_path, parallel={"strategy": "frames", "degree": 3}), "parallel.degree"),
        ({**video_spec(tmp_path), "job": "audio"}, "job"),
    ):
        with pytest.raises(SpecError, match=field):
            client.submit(bad)
    assert store.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == before


def test_pause_for_higher_priority_then_resume_equals_uninterrupted(client, reference, tmp_path):
    long = client.submit(video_spec(tmp_path / "out"))
    wait_for_tick(long, 3)  # block 0 has left the queue: its frames are in a block file
    urgent = client.submit(  # one block, one worker, long enough for the paused job to resume beside it
        video_spec(tmp_path / "out", frames=2, steps=6, parallel={"strategy": "none", "degree": 1}),
        priority=10,
    )
    urgent_done = urgent.wait(timeout_s=300)
    final = long.wait(timeout_s=300)
    logs = long.logs()
    assert urgent_done["state"] == "succeeded" and final["state"] == "succeeded", logs
    assert "paused" in logs and final["attempts"] == 2, logs
    assert urgent_done["finished_at"] < final["finished_at"]
    resumed = logs.split("attempt 2", 1)[1].splitlines()[0]
    assert "from tick" in resumed and "(0 blocks kept)" not in resumed, logs
    assert "(video, 1 stages" in resumed, logs  # degree auto: resumed on the one worker left free
    np.testing.assert_array_equal(decoded_frames(final), decoded_frames(reference))


def test_cancel_a_running_video_leaves_nothing_behind(client, tmp_path):
    job = client.submit(video_spec(tmp_path / "out"))
    wait_for_tick(job, 4)  # blocks 0 and 1 are in block files
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f".{job.id}.partial"]
    job.cancel()
    final = job.wait(timeout_s=300)
    assert final["state"] == "cancelled", job.logs()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_killed_worker_resumes_from_checkpoint(client, reference, tmp_path):
    job = client.submit(video_spec(tmp_path / "out", parallel={"strategy": "frames", "degree": 2}))
    wait_for_tick(job, 4, checkpoint=True)
    pids = [info["pid"] for info in ray.get(client.controller.info.remote())["pool"]]
    os.kill(pids[1], signal.SIGKILL)
    final = job.wait(timeout_s=300)
    logs = job.logs()
    assert final["state"] == "succeeded", logs
    assert final["attempts"] == 2 and "worker died" in logs, logs
    resumed = logs.split("attempt 2", 1)[1].splitlines()[0]
    assert "from tick 4" in resumed or "from tick 6" in resumed, logs  # its last checkpoint
    np.testing.assert_array_equal(decoded_frames(final), decoded_frames(reference))


def test_guided_frame_pipeline_with_a_branch_per_worker_survives_a_killed_worker(client, tmp_path):
    """``parallel.cfg`` with the frame pipeline: each of the 2 workers renders every block on one guidance branch;
    killed mid-render, the job resumes from the checkpoint the controller merged from both branches and writes
    the video the uninterrupted split writes, which is one worker's (batched branches) up to float rounding."""
    guided = dict(negative_prompt="blurry", guidance_scale=3.0)
    split = {"strategy": "frames", "degree": 2, "cfg": True}
    one = client.submit(video_spec(tmp_path / "one", parallel={"strategy": "none", "degree": 1}, **guided))
    whole = client.submit(video_spec(tmp_path / "split", parallel=split, **guided))
    assert one.wait(timeout_s=300)["state"] == "succeeded" and whole.wait(timeout_s=300)["state"] == "succeeded"
    meta = json.loads(open(whole.status()["outputs"]["metadata"]).read())
    assert [worker["cfg"]["branch"] for worker in meta["workers"]] == ["cond", "uncond"]
    assert (meta["degree"], meta["stages"]) == (2, 1)  # a one-stage pipeline per branch
    assert all(worker["decode_cpu_s"] > 0 for worker in meta["workers"])  # the partner decodes half of each block
    # and sends rank 0 its frame of each 2-frame block: a 4-number shape, then 32 x 32 x 3 bytes, counted
    sent = [worker["cfg"]["bytes_sent"].get("frames", {}) for worker in meta["workers"]]
    assert not sent[0] and sum(sent[1].values()) == 6 * (4 * 8 + 32 * 32 * 3)
    levels = np.abs(decoded_frames(whole.status()).astype(int) - decoded_frames(one.status()).astype(int))
    assert levels.mean() < 0.5, levels.max()  # latents within 1e-6 (tests/video/test_frame_cfg_split.py)

    job = client.submit(video_spec(tmp_path / "killed", parallel=split, **guided))
    wait_for_tick(job, 4, checkpoint=True)
    pids = [info["pid"] for info in ray.get(client.controller.info.remote())["pool"]]
    os.kill(pids[1], signal.SIGKILL)
    final = job.wait(timeout_s=300)
    logs = job.logs()
    assert final["state"] == "succeeded" and final["attempts"] == 2 and "worker died" in logs, logs
    np.testing.assert_array_equal(decoded_frames(final), decoded_frames(whole.status()))


def test_cogvideox_jobs_with_strategy_none_on_two_stages_on_bands_and_ulysses(client, tmp_path):
    """A CogVideoX 1.5 directory (temporal patch, rotary positions, DPM scheduler) as ``model``: the job on one
    worker and the job on 2 frame stages give the same video, 4 frames per latent frame; on 2 workers' row bands,
    and under Tessera's Ulysses, it renders the whole video as one block."""
    model = save_tiny_cogvideox(tmp_path / "tiny-cogvideox-1.5", "1.5", "dpm")
    render = dict(
        model=str(model), prompt="red circle on green", negative_prompt="blurry", guidance_scale=3.0,
        frames=24, block_frames=8, context_frames=4,
    )
    videos = []
    for strategy, degree in (("none", 1), ("frames", 2)):
        spec = video_spec(tmp_path / "out", **render, parallel={"strategy": strategy, "degree": degree})
        job = client.submit(spec)
        record = job.wait(timeout_s=300)
        assert record["state"] == "succeeded", job.logs()
        meta = json.loads(open(record["outputs"]["metadata"]).read())
        assert (meta["frames"], meta["blocks"], meta["stages"], meta["strategy"]) == (24, 3, degree, strategy)
        videos.append(decoded_frames(record))
    assert videos[0].shape == (24, 32, 32, 3)
    np.testing.assert_array_equal(videos[1], videos[0])
    # row bands and Tessera's Ulysses: the whole video as one block (their parity with one worker:
    # test_cogvideox_bands.py, test_cogvideox_sequence.py)
    for strategy in ("patch", "sequence"):
        job = client.submit(video_spec(tmp_path / "out", **render, parallel={"strategy": strategy, "degree": 2}))
        record = job.wait(timeout_s=300)
        assert record["state"] == "succeeded", job.logs()
        meta = json.loads(open(record["outputs"]["metadata"]).read())
        assert (meta["frames"], meta["blocks"], meta["strategy"]) == (24, 1, strategy)
        assert decoded_frames(record).shape == (24, 32, 32, 3)


AUTO_RENDERS = {  # guidance scale: a short video whose cost-model pick on 2 free workers splits the whole video
    1.0: dict(frames=4, block_frames=4, context_frames=0, height=256, width=256),  # bands (at 32 px: one worker)
    5.0: dict(frames=4, block_frames=2, context_frames=1, height=32, width=32),  # a guidance branch per worker
}


@pytest.mark.parametrize("guidance_scale", [1.0, 5.0])
def test_auto_strategy_job_picks_the_cost_models_plan(client, tmp_path, guidance_scale):
    """``parallel.strategy=auto``: a short video on the 2 free workers runs as the cost model's fastest plan
    (``parallel.cost.video``; unguided, one 256 px block: bands of the whole video; guided, 2 blocks at 32 px: a
    guidance branch per worker), recorded in metadata.json, and its video equals one worker rendering the video as
    one block (sync bands and the branch split are exact)."""
    from cluster.jobs.video import VideoParallelSpec, VideoSpec
    from cluster.scheduler import CostModelDegreeRule
    from parallel.cost.video import pick_video_plan, rank_video_plans
    from pipelines.builtin import resolve_model
    from pipelines.families.wan import WAN
    from runtime.device import device_slot
    from runtime.jobs.video_session import open_video_session
    from runtime.worker import Worker

    render = dict(AUTO_RENDERS[guidance_scale], steps=3, seed=4, guidance_scale=guidance_scale)
    side, blocks = render["height"], render["frames"] // render["block_frames"]
    rule = CostModelDegreeRule()  # the pool's rule: cpu-core over loopback
    guided = guidance_scale > 1
    plans = rank_video_plans(
        WAN.cost_model(resolve_model("builtin-video"), "float32"), side, side, 4, render["block_frames"], 3, 2,
        max_stages=6,
        batch=2 if guided else 1, device=rule.device, link=rule.link,
    )
    best = pick_video_plan(plans)
    assert best.strategy in ("sequence", "patch")  # this test's point: a whole-video pick, through a job
    assert best.cfg == guided  # and guided, the branches split
    job = client.submit(video_spec(tmp_path / "out", **render, parallel={"strategy": "auto", "degree": "auto"}))
    record = job.wait(timeout_s=300)
    assert record["state"] == "succeeded", job.logs()
    meta = json.loads(open(record["outputs"]["metadata"]).read())
    assert (meta["strategy"], meta["degree"], meta["blocks"]) == (best.strategy, best.degree, 1)
    assert record["steps_done"] == blocks + 3 - 1  # the job's ticks as submitted, its 3 whole-video steps done
    assert (meta["auto"]["strategy"], meta["auto"]["degree"], meta["auto"]["cfg"]) == (best.strategy, best.degree, best.cfg)
    assert meta["auto"]["predicted"]["predicted_render_s"] == pytest.approx(best.render_s)
    branches = [worker.get("cfg", {}).get("branch") for worker in meta["workers"]]
    assert branches == (["cond", "uncond"] if guided else [None, None])
    one = VideoSpec(
        model=str(resolve_model("builtin-video")), parallel=VideoParallelSpec("none", 1),
        **{**render, "block_frames": 4, "context_frames": 0},
    )
    worker = Worker(0, device_slot("cpu"))
    worker.begin(open_video_session, one, None, video_path=str(tmp_path / "one.mp4"))
    worker.advance(None)
    worker.finish()
    got, ref = decoded_frames(record), decoded_frames({"outputs": {"video": str(tmp_path / "one.mp4")}})
    assert got.shape == ref.shape == (4, side, side, 3)
    diff = np.abs(got.astype(int) - ref.astype(int)).max()
    print(f"auto ({best.strategy} x{best.degree}) job vs 1 worker, one block: max abs diff {diff} (uint8 frames)")
    assert diff <= 1


WAN22_RENDER = dict(
    prompt="red and yellow stripes",
    negative_prompt="blurry",
    guidance_scale=3.0,
    height=32,
    width=32,
    frames=8,  # one block of 2 latent frames, 5 video frames
    block_frames=8,
    context_frames=4,
    steps=4,  # 2 on each expert (BOUNDARY_RATIO)
    seed=6,
    fps=8.0,
)


def test_wan22_jobs_expert_segments_image_to_video_and_ti2v(client, tmp_path, monkeypatch):
    """Wan 2.2 I2V A14B with its conditioning ``image`` (given relative to the client's folder: made absolute at
    submit, read by the workers): a one-block video runs as two step segments (the high-noise expert's steps,
    a checkpoint, the low-noise expert's, placed anew) to the video one worker renders in process in one go; a
    two-block video on 2 frame stages; a TI2V-5B directory with ``parallel=none``."""
    torch.set_num_threads(1)
    models = {
        "i2v": save_tiny_wan_i2v(tmp_path / "i2v", two_experts=True),
        "ti2v": save_tiny_wan_ti2v(tmp_path / "ti2v"),
        "image": save_test_image(tmp_path / "first.png"),
    }
    worker = Worker(0, device_slot("cpu"))
    spec = VideoSpec(
        model=str(models["i2v"]),
        image=str(models["image"]),
        parallel=VideoParallelSpec("none", 1),
        **WAN22_RENDER,
    )
    worker.begin(
        open_video_session, spec, None, video_path=str(tmp_path / "one.mp4"), block_dir=str(tmp_path / "b")
    )
    worker.advance(None)
    worker.finish()
    reference = decoded_frames({"outputs": {"video": str(tmp_path / "one.mp4")}})

    monkeypatch.chdir(models["image"].parent)  # a relative image path: resolved at submit
    jobs = {}
    for name, model, changes in (
        ("segments", "i2v", {"image": models["image"].name, "parallel": {"strategy": "none", "degree": 1}}),
        ("stages", "i2v", {"image": "first.png", "frames": 16, "parallel": {"strategy": "frames", "degree": 2}}),
        ("ti2v", "ti2v", {"height": 64, "width": 64, "steps": 2, "parallel": {"strategy": "none", "degree": 1}}),
    ):
        fields = {**WAN22_RENDER, "model": str(models[model]), "output_dir": str(tmp_path / "outputs"), **changes}
        jobs[name] = client.submit({"job": "video", **fields})
    records = {}
    for name, job in jobs.items():
        records[name] = job.wait(timeout_s=300)
        assert records[name]["state"] == "succeeded", job.logs()
    assert "segment done at tick 2" in jobs["segments"].logs()
    np.testing.assert_array_equal(decoded_frames(records["segments"]), reference)  # 2 segments: the 1-go video
    assert reference.shape == (5, 32, 32, 3)
    meta = json.loads(open(records["stages"]["outputs"]["metadata"]).read())
    assert (meta["blocks"], meta["stages"], decoded_frames(records["stages"]).shape) == (2, 2, (13, 32, 32, 3))
    assert decoded_frames(records["ti2v"]).shape == (5, 64, 64, 3)
