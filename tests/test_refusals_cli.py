"""`tessera submit` refuses malformed jobs locally, before contacting any controller: exit code 2 and one line
`tessera: invalid job: <field>: ...` on stderr."""

from __future__ import annotations

import pytest
import ray

from cluster.cli import main

pytestmark = pytest.mark.usefixtures("ray_stopped")

CLI_ROWS = [
    (["height=100"], "height"),
    (["steps=1000"], "steps"),  # the built-in model's DDIM cannot take 1000 steps
    (["guidance_scale=inf"], "guidance_scale"),
    (["heigth=64"], "heigth"),
    (["parallel.degre=2"], "parallel.degre"),
    (["frames=8"], "frames"),
    (["job=video", "fps=nan"], "fps"),
    (["job=video", "sampler=ddim"], "sampler"),
    (["job=audio"], "job"),
    (["model.name=" + "x" * 5000], "model"),
    (["--priority", str(2**70)], "priority"),
    (["--token", ""], "client_token"),
]


@pytest.mark.parametrize("args,field", CLI_ROWS, ids=lambda v: str(v)[:30])
def test_submit_refuses_in_one_line_naming_the_field(args, field, capsys):
    assert main(["submit", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tessera: invalid job: {field}: "), err[:300]
    assert len(err.strip().splitlines()) == 1, err[:300]
    assert not ray.is_initialized()  # refused before contacting any controller
