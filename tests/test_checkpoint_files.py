"""A job's checkpoint carries its id and a checksum; a damaged one is set aside (kept as *.bad) with the reason,
and the previous good checkpoint, if any, is used instead."""

from __future__ import annotations

import io

import pytest
import torch

from cluster.job_files import JobFiles

STATE = {"step_index": 4, "latents": torch.arange(6.0).reshape(1, 1, 2, 3), "scheduler": {}, "rows": [0, 2]}


def _malicious_pickle() -> bytes:
    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    import pickle

    return pickle.dumps({"step_index": 1, "payload": Boom()})


def _another_jobs(files: JobFiles) -> bytes:
    files.save_checkpoint("other-job", STATE)
    return files.checkpoint_path("other-job").read_bytes()


def _bad_checksum(files: JobFiles) -> bytes:
    files.save_checkpoint("scratch", STATE)
    record = torch.load(files.checkpoint_path("scratch"), weights_only=True)
    record["sha256"] = "0" * 64
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return buffer.getvalue()


DAMAGE = {
    "truncated": lambda files, good: good[: len(good) // 2],
    "empty": lambda files, good: b"",
    "wrong type": lambda files, good: _saved([1, 2, 3]),
    "refused pickle": lambda files, good: _malicious_pickle(),
    "another job's": lambda files, good: _another_jobs(files),
    "checksum mismatch": lambda files, good: _bad_checksum(files),
}


def _saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def test_a_checkpoint_reads_back_as_written(tmp_path):
    files = JobFiles(tmp_path)
    files.save_checkpoint("job", STATE)
    loaded = files.load_checkpoint("job")
    assert loaded.problems == [] and loaded.state["step_index"] == 4
    torch.testing.assert_close(loaded.state["latents"], STATE["latents"])


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_set_aside_for_the_previous_one(tmp_path, kind, capsys):
    files = JobFiles(tmp_path)
    files.save_checkpoint("job", dict(STATE, step_index=2))
    files.save_checkpoint("job", STATE)  # the step-2 checkpoint becomes the previous one
    path = files.checkpoint_path("job")
    path.write_bytes(DAMAGE[kind](files, path.read_bytes()))
    loaded = files.load_checkpoint("job")
    assert loaded.state is not None and loaded.state["step_index"] == 2  # the previous, good one
    assert len(loaded.problems) == 1 and loaded.problems[0].startswith("checkpoint.pt:")
    assert path.with_name("checkpoint.pt.bad").exists() and not path.exists()
    assert "must never run" not in capsys.readouterr().out


def test_with_no_good_checkpoint_the_job_starts_over(tmp_path):
    files = JobFiles(tmp_path)
    files.save_checkpoint("job", STATE)
    files.checkpoint_path("job").write_bytes(b"")
    loaded = files.load_checkpoint("job")
    assert loaded.state is None and len(loaded.problems) == 1


def test_a_checkpoint_written_before_checksums_still_reads(tmp_path):
    files = JobFiles(tmp_path)
    files.checkpoint_path("job").parent.mkdir(parents=True)
    torch.save(STATE, files.checkpoint_path("job"))
    assert files.load_checkpoint("job").state["step_index"] == 4
