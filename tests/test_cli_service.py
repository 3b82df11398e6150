"""`tessera serve` in one process, the job verbs from others, through the served Ray cluster.

The server runs one named pool (`pools=[...]`) and the job asks for it by name (`device=farm`)."""

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _tessera(*args, cwd, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """(the Ray address, the HTTP API's URL) of a `tessera serve`."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "serve",
            "pools=[{name: farm, device: cpu, workers: 1}]",
            f"http.port={_free_port()}",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    address = url = None
    deadline = time.monotonic() + 240
    lines = []
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        lines.append(line)
        if line.startswith("tessera controller serving"):
            assert "['farm']" in line, line
        if line.startswith("Ray address: "):
            address = line.split(": ", 1)[1].strip()
        if line.startswith("HTTP API: "):
            url = line.split()[2]
            break
        if server.poll() is not None:
            break
    assert address and url, "".join(lines)
    yield address, url
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=120) == 0


@pytest.mark.slow
def test_serve_submit_wait_list_logs(served, tmp_path):
    served, url = served
    out = tmp_path / "outputs"  # the served store confines outputs to ./outputs (its cwd's) by default
    submit = _tessera(
        "submit",
        "height=64",
        "width=64",
        "steps=2",
        "parallel=none",
        "device=farm",
        f"output_dir={out}",
        "--priority",
        "3",
        "--address",
        served,
        cwd=tmp_path,
    )
    assert submit.returncode == 0, submit.stderr[-2000:]
    job_id = submit.stdout.strip().splitlines()[-1]
    waited = _tessera("wait", job_id, "--address", served, cwd=tmp_path)
    assert waited.returncode == 0, waited.stderr[-2000:]
    record = json.loads(waited.stdout.strip().splitlines()[-1])
    assert record["state"] == "succeeded" and (out / job_id / "image.png").is_file()
    listed = _tessera("list", "--address", served, cwd=tmp_path)
    assert job_id in listed.stdout and "succeeded" in listed.stdout
    logs = _tessera("logs", job_id, "--address", served, cwd=tmp_path)
    assert "submitted with priority 3" in logs.stdout and "succeeded" in logs.stdout
    assert "of pool farm" in logs.stdout
    # the HTTP API serve started talks to the same controller: open on its loopback bind while no token exists
    with urllib.request.urlopen(f"{url}/v1/jobs/{job_id}", timeout=60) as reply:
        assert json.loads(reply.read())["state"] == "succeeded"
    through_http = _tessera("list", "--url", url, cwd=tmp_path)  # the CLI through the HTTP API
    assert through_http.returncode == 0 and f"{job_id}  succeeded" in through_http.stdout, through_http.stderr[-2000:]
    unknown = _tessera("status", "no-such-job", "--address", served, cwd=tmp_path)
    assert unknown.returncode == 2 and "no job" in unknown.stderr
    # Ray loads an actor's class wherever a handle is taken; the controller's class is a thin front.
    assert _imports_of_a_job_verb(served, tmp_path) == []
    # --address auto joins the cluster this store's serve recorded, whatever else runs on the machine
    auto = _tessera("list", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert auto.returncode == 0 and job_id in auto.stdout, auto.stderr[-2000:]
    # outputs outside the served roots are refused at submit, in one line naming the field
    elsewhere = _tessera("submit", "steps=2", f"output_dir={tmp_path / 'elsewhere'}", "--address", served, cwd=tmp_path)
    ours = [line for line in elsewhere.stderr.splitlines() if not line[:4].isdigit()]  # not Ray's own log lines
    assert elsewhere.returncode == 2 and len(ours) == 1, elsewhere.stderr
    assert ours[0].startswith("tessera: invalid job: output_dir:") and "outside the output roots" in ours[0]


def _imports_of_a_job_verb(address: str, cwd) -> list[str]:
    """Which heavy packages a process loads to reach the served controller and list its jobs."""
    code = (
        "import sys; from cluster.client import Client; "
        f"Client(address={address!r}, connect_only=True).jobs(); "
        "import json; print(json.dumps(sorted(m for m in ('torch', 'diffusers', 'cluster.controller') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_serve_stops_when_its_controller_dies(tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "serve", "pool.workers=1", "pool.device=cpu", "http.enabled=false", "--state-dir", "state"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    while (line := server.stdout.readline()) and not line.startswith("Ray address: "):
        lines.append(line)
    address = line.split(": ", 1)[1].strip()
    assert (tmp_path / "state" / "ray_address").read_text().strip() == address, "".join(lines)
    kill = (
        "import ray; from cluster.names import CONTROLLER_NAME, NAMESPACE\n"
        "from runtime.ray_session import join_cluster\n"
        f"join_cluster({address!r}, namespace=NAMESPACE)\n"
        "ray.kill(ray.get_actor(CONTROLLER_NAME))\n"
    )
    subprocess.run([sys.executable, "-c", kill], cwd=tmp_path, check=True, timeout=120, capture_output=True)
    assert server.wait(timeout=120) == 1
    assert "the controller died; serve stops" in server.stdout.read()
    assert not (tmp_path / "state" / "ray_address").exists()


@pytest.mark.slow
def test_a_sigkilled_serve_leaves_no_ray_process_of_its_own(tmp_path):
    from cluster.serve_reaper import _alive, descendants

    server = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "serve", "pool.workers=1", "pool.device=cpu", "http.enabled=false", "--state-dir", "state"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while (line := server.stdout.readline()) and not line.startswith("Ray address: "):
        pass
    time.sleep(2)  # the reaper has seen the whole tree by now
    tree = descendants(server.pid)
    assert len(tree) >= 4, tree  # Ray's own processes, the controller and its worker
    server.kill()
    server.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in tree if _alive(p)]
