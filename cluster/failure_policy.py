"""What happens to a job whose attempt failed: a swappable policy, asked by the segment runner.

A worker that died (killed process, lost node) is replaced by the runner whatever the policy says;
the policy decides whether the job goes back to the queue (it resumes from its last checkpoint) or
fails. The default retries worker deaths a few times, requeues a job whose state could not be written
(a full disk, a locked store: nothing wrong with the job), and fails on any other error, which would
only happen again.
"""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from cluster.store import JobRecord


@dataclass(frozen=True)
class Failure:
    """One failed attempt of a job."""

    job: JobRecord
    """The job as it was when the attempt began (its ``failures`` not yet counting this one)."""
    error: BaseException
    """What the attempt raised."""
    worker_died: bool
    """Whether a worker of its group was dead or unresponsive when the error came."""
    storage: bool = False
    """Whether the error was the state directory or the job store refusing a write (``is_storage_error``)."""


class FailurePolicy(Protocol):
    def decide(self, failure: Failure) -> str:
        """"queued" (retry from the last checkpoint) or "failed"."""


@dataclass(frozen=True)
class RetryWorkerDeaths:
    """Retry an attempt that lost a worker, up to ``max_attempts`` such attempts; fail on anything else."""

    max_attempts: int = 3
    """Attempts ending in a worker failure before the job is marked failed."""

    def decide(self, failure: Failure) -> str:
        if failure.storage:
            return "queued"
        if failure.worker_died and failure.job.failures + 1 < self.max_attempts:
            return "queued"
        return "failed"


STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def is_storage_error(err: BaseException) -> bool:
    """The job store or the state directory could not be written: a full disk, a quota, a locked database."""
    if isinstance(err, sqlite3.OperationalError):
        return True
    return isinstance(err, OSError) and err.errno in STORAGE_ERRNOS
