"""`from cluster import Client` works, and neither `import cluster` nor the light CLI verbs load torch or diffusers.

Each check runs in a fresh interpreter, where nothing else has imported torch yet. The verbs run against a
stand-in client (no Ray cluster needed): what is measured is what their code paths import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "deepspeed")


def _fresh(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_from_cluster_import_client_loads_no_model_code():
    result = _fresh(
        "import sys, json\n"
        "import cluster\n"
        f"before = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "from cluster import Client, SpecError\n"
        "import cluster.client, cluster.errors\n"
        "same = Client is cluster.client.Client and SpecError is cluster.errors.SpecError\n"
        f"after = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps({'before': before, 'after': after, 'same': same}))\n"
    )
    assert result == {"before": [], "after": [], "same": True}


def test_exported_names_resolve_and_unknown_ones_raise():
    import cluster

    assert all(getattr(cluster, name).__name__ == name for name in cluster.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        cluster.nothing_here  # noqa: B018


def test_light_cli_verbs_load_no_model_code():
    result = _fresh(
        "import sys, json, io, contextlib\n"
        "import cluster.client\n"
        "class FakeJob:\n"
        "    def __init__(self, job_id): self.id = job_id\n"
        "    def status(self): return {'id': self.id, 'state': 'running'}\n"
        "    def wait(self, progress, timeout_s): return {'id': self.id, 'state': 'succeeded', 'outputs': {}}\n"
        "    def cancel(self): return {'state': 'cancelled'}\n"
        "    def logs(self): return 'a log line\\n'\n"
        "class FakeClient:\n"
        "    def __init__(self, address=None, connect_only=False): assert connect_only\n"
        "    def job(self, job_id): return FakeJob(job_id)\n"
        "    def jobs(self, state=None):\n"
        "        return [{'id': 'j1', 'state': 'queued', 'priority': 0, 'steps_done': 0, 'spec': {'steps': 20}}]\n"
        "cluster.client.Client = FakeClient\n"
        "from cluster.cli import main\n"
        "codes = {}\n"
        "for argv in (['list'], ['status', 'j1'], ['logs', 'j1'], ['wait', 'j1'], ['cancel', 'j1']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        codes[argv[0]] = main(argv)\n"
        f"print(json.dumps({{'codes': codes, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))\n"
    )
    assert result == {"codes": {"list": 0, "status": 0, "logs": 0, "wait": 0, "cancel": 0}, "heavy": []}
