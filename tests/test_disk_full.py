"""A full disk under the state directory never leaves a job running: the end the store cannot record is kept
and written once there is room again, a placement it refuses leaves the job queued (not failed), and the job ends in
its true state (here: it resumes and succeeds). Which write meets the full disk first is the machine's timing, so
the controller's log holds either record.

The state directory is a small tmpfs filled up while a job renders; mounting one needs root (as here and in CI).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time

import pytest
import ray

from cluster.client import Client
from cluster.store import JobStore
from runtime.pool import PoolConfig


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "state"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(path) -> None:
    """Write zeros until the file system is full."""
    # unbuffered: a buffered file would try to flush the write that did not fit again when it closes, and raise
    with open(path, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * (1 << 16))
                os.fsync(filler.fileno())
        except OSError:
            pass


@pytest.mark.slow
def test_a_job_whose_state_cannot_be_written_ends_in_its_true_state_once_there_is_room(ray_local, small_disk, tmp_path):
    client = Client(state_dir=small_disk, pool=PoolConfig(workers=1, device="cpu"), checkpoint_every=1)
    try:
        spec = {"height": 128, "width": 128, "steps": 30, "seed": 3, "output_dir": str(tmp_path / "outputs")}
        job = client.submit(spec)
        deadline = time.monotonic() + 120
        while job.status()["steps_done"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        filler = small_disk / "filler"
        _fill(filler)
        time.sleep(5)  # the job's next progress or checkpoint write fails; its end cannot be recorded either
        assert job.status()["state"] != "succeeded"
        filler.unlink()
        final = job.wait(timeout_s=300)
        assert final["state"] == "succeeded", job.logs()
        assert (tmp_path / "outputs" / job.id / "image.png").is_file()
        # the refusal itself could only go to stderr; the late record is in the controller's log
        log = (small_disk / "logs" / "controller.log").read_text()
        assert any(f"takes writes again: job {job.id} {end}" in log for end in ("ended queued", "stayed queued")), log
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)


def test_a_commit_the_full_disk_refuses_leaves_the_store_usable(small_disk):
    """SQLite may keep a transaction open when the disk refuses its COMMIT: the store rolls it back, so the job stays
    queued and the next write, once there is room, commits."""
    store = JobStore(small_disk / "jobs.sqlite")
    jobs = [store.submit({"job": "image", "n": n})[0] for n in range(20)]
    _fill(small_disk / "filler")
    refused = None
    for job in jobs:  # the journal's pages may still take a write or two
        try:
            store.place(job.id)
        except sqlite3.OperationalError as err:
            assert "full" in str(err), err
            refused = job
            break
    assert refused is not None, "the full disk refused no write"
    assert store.get(refused.id).state == "queued"
    (small_disk / "filler").unlink()
    assert store.place(refused.id).state == "placed"


@pytest.mark.slow
def test_a_placement_the_full_disk_refuses_leaves_the_job_queued(ray_local, small_disk, tmp_path):
    """The scheduler meets the full disk when it places a job (held at the gate until the disk is full): the job
    stays queued, not failed, and runs once there is room; the controller's log says so then."""
    from cluster.controller import Controller, ControllerConfig

    controller = Controller(ControllerConfig(state_dir=str(small_disk), pool=PoolConfig(workers=1, device="cpu"),
                                             poll_s=0.1))
    try:
        place, full, tries = controller._place_head, threading.Event(), []

        def gated() -> bool:
            full.wait()
            tries.append(True)
            return place()

        controller._place_head = gated
        record = controller.submit({"height": 64, "width": 64, "steps": 2, "output_dir": str(tmp_path / "out")})
        _fill(small_disk / "filler")
        full.set()
        deadline = time.monotonic() + 30
        while len(tries) < 5 and time.monotonic() < deadline:  # placements tried, and refused, on the full disk
            time.sleep(0.05)
        assert len(tries) >= 5 and controller.get(record["id"])["state"] == "queued"
        (small_disk / "filler").unlink()
        while controller.get(record["id"])["state"] != "succeeded" and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        assert controller.get(record["id"])["state"] == "succeeded"
        log = (small_disk / "logs" / "controller.log").read_text()
        assert f"the job store takes writes again: job {record['id']} stayed queued while it refused" in log, log
    finally:
        controller.stop()
