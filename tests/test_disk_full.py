"""A full disk under the state directory never leaves a job running: the end the store cannot record is kept
and written once there is room again, and the job ends in its true state (here: it resumes and succeeds).

The state directory is a small tmpfs filled up while a job renders; mounting one needs root (as here and in CI).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import ray

from cluster.client import Client
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
        assert f"takes writes again: job {job.id} ended queued" in (small_disk / "logs" / "controller.log").read_text()
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
