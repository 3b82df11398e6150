"""The queue keeps moving through a damaged checkpoint, and a second controller cannot take a store that a
live one holds (it would place the same jobs twice)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from _job_outputs import job_image

from cluster.client import Client
from cluster.store_lock import StoreLock, StoreLockedError
from runtime.pool import PoolConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def client(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=1, device="cpu"), checkpoint_every=2)
    client.outputs = root / "outputs"
    client.state_dir = root / "state"
    yield client
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _spec(client, **extra) -> dict:
    return {"height": 192, "width": 192, "steps": 16, "seed": 4, "output_dir": str(client.outputs), **extra}


def test_a_damaged_checkpoint_of_a_paused_job_is_set_aside_and_the_queue_moves_on(client):
    reference = client.submit(_spec(client)).wait(timeout_s=300)
    job = client.submit(_spec(client))
    deadline = time.monotonic() + 120
    while job.status()["steps_done"] < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    urgent = client.submit(_spec(client, steps=8, seed=1), priority=5)
    while job.status()["state"] != "paused" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.status()["state"] == "paused", job.logs()
    checkpoint = client.state_dir / "jobs" / job.id / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])  # truncated while the job waits
    after = client.submit(_spec(client, steps=4, seed=2))
    assert urgent.wait(timeout_s=300)["state"] == "succeeded"
    final = job.wait(timeout_s=300)
    assert final["state"] == "succeeded", job.logs()
    assert after.wait(timeout_s=300)["state"] == "succeeded"
    assert "checkpoint.pt: unreadable" in job.logs() and "set aside" in job.logs()
    assert checkpoint.with_name("checkpoint.pt.bad").exists()
    # resumed from the previous checkpoint: the same image as the uninterrupted render
    assert np.array_equal(job_image(final), job_image(reference))


def test_a_store_lock_is_refused_while_its_holder_lives(tmp_path):
    held = StoreLock(tmp_path / "jobs.sqlite")
    code = (
        "import sys; from cluster.store_lock import StoreLock, StoreLockedError\n"
        f"try:\n    StoreLock({str(tmp_path / 'jobs.sqlite')!r}, wait_s=0.5)\n"
        "except StoreLockedError as err:\n    print('refused:', err); sys.exit(3)\n"
    )
    refused = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 3 and "another controller holds the job store" in refused.stdout
    held.release()
    taken = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    with pytest.raises(StoreLockedError):  # and within one process, a second lock on a held store
        first = StoreLock(tmp_path / "other.sqlite")
        try:
            StoreLock(tmp_path / "other.sqlite", wait_s=0.2)
        finally:
            first.release()


def test_a_second_controller_on_a_served_store_is_refused(client, tmp_path):
    """A controller in another Ray cluster (another `tessera serve`, say) on the same state directory."""
    code = (
        "from cluster.client import Client\nfrom runtime.pool import PoolConfig\n"
        f"Client(state_dir={str(client.state_dir)!r}, pool=PoolConfig(workers=1, device='cpu'), store_lock_wait_s=1.0)\n"
    )
    second = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert second.returncode != 0 and "another controller holds the job store" in second.stderr
    assert client.submit(_spec(client, steps=2)).wait(timeout_s=120)["state"] == "succeeded"  # the first goes on


def test_the_watchdog_restarts_a_dead_scheduler_thread(ray_local, tmp_path):
    """The scheduling thread catches every Exception per job; should anything still end it (here a SystemExit
    raised inside it), the watchdog starts a new one, says so, and the queue moves on."""
    from cluster.controller import Controller, ControllerConfig

    controller = Controller(
        ControllerConfig(state_dir=str(tmp_path / "state"), pool=PoolConfig(workers=1, device="cpu"), poll_s=0.1)
    )
    try:
        place, ended = controller._place_head, []

        def dies_once() -> bool:
            if not ended:
                ended.append(True)
                raise SystemExit("the scheduling thread ends here")
            return place()

        controller._place_head = dies_once
        deadline = time.monotonic() + 30
        while not ended and time.monotonic() < deadline:
            time.sleep(0.05)
        record = controller.submit({"height": 64, "width": 64, "steps": 2, "output_dir": str(tmp_path / "out")})
        while controller.get(record["id"])["state"] != "succeeded" and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        assert controller.get(record["id"])["state"] == "succeeded"
        assert "the scheduler thread had died; restarted" in (tmp_path / "state" / "logs" / "controller.log").read_text()
    finally:
        controller.stop()


TWO_CONTROLLERS = """
import json, sys
from cluster.client import Client
from cluster.store_lock import StoreLockedError
from runtime.pool import PoolConfig
state, out, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    client = Client(state_dir=state, pool=PoolConfig(workers=1, device="cpu"), store_lock_wait_s=1.0)
except Exception as err:
    print(json.dumps({"refused": "another controller holds the job store" in str(err)}))
    sys.exit(0)
ids = [client.submit({"height": 64, "width": 64, "steps": 2, "seed": i, "output_dir": out}).id for i in range(jobs)]
records = [client.job(i).wait(timeout_s=600) for i in ids]
print(json.dumps({"states": sorted({r["state"] for r in records}), "attempts": sorted({r["attempts"] for r in records})}))
client.close()
"""


@pytest.mark.slow
def test_two_controllers_started_together_on_one_store_render_each_job_once(tmp_path):
    state, out = tmp_path / "state", tmp_path / "outputs"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_CONTROLLERS, str(state), str(out), "50"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=900)
        assert run.returncode == 0, stderr[-3000:]
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted("refused" in r for r in reports) == [False, True]  # one took the store, one was refused
    served = next(r for r in reports if "refused" not in r)
    assert served == {"states": ["succeeded"], "attempts": [1]}
    assert len([p for p in out.iterdir() if not p.name.startswith(".")]) == 50  # each job rendered once
