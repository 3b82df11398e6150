"""Kill what a `tessera serve` leaves behind when it is killed outright.

`tessera serve` starts its own Ray cluster as child processes. SIGTERM lets it shut them down; SIGKILL does
not, and some of Ray's processes (the raylet's agents, the controller and its workers for a few seconds)
outlive it. So serve starts this reaper in a session of its own: it keeps a list of serve's descendant
processes while serve lives, and when serve is gone it ends those still running (SIGTERM, then SIGKILL).
A process is matched by its pid and its start time, so a recycled pid is never touched.

    python -m cluster.serve_reaper SERVE_PID
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

Process = tuple[int, int]
"""(pid, start time in clock ticks since boot): one process, not just a pid."""


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> set[Process]:
    """Every live process below ``root`` in the process tree."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry.name))
                starts[int(entry.name)] = stat[1]
    found, todo = set(), list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.add((pid, starts[pid]))
        todo.extend(children.get(pid, []))
    return found


def _alive(process: Process) -> bool:
    stat = _stat(process[0])
    return stat is not None and stat[1] == process[1]


def reap(processes: set[Process], grace_s: float = 3.0) -> None:
    """SIGTERM the processes still alive, then SIGKILL what has not gone after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for process in processes:
            if _alive(process):
                try:
                    os.kill(process[0], sig)
                except OSError:
                    pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in processes):
            time.sleep(0.1)


def main(serve_pid: int, poll_s: float = 1.0) -> None:
    serve = (serve_pid, _stat(serve_pid)[1]) if _stat(serve_pid) else None
    known: set[Process] = set()
    while serve is not None and _alive(serve):
        known |= {p for p in descendants(serve_pid) if p[0] != os.getpid()}  # serve started this reaper too
        time.sleep(poll_s)
    reap(known)


if __name__ == "__main__":
    main(int(sys.argv[1]))
