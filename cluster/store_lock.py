"""One controller per job store: an exclusive OS lock on ``<store>.lock``, held for the controller's life.

Two controllers on one store would both place its queued jobs and render some twice. The lock is the
kernel's (``flock``), so it goes with the process that holds it: a controller that dies, however it dies,
leaves the store free for the next one, and a second live controller is refused with who holds it. A
controller still winding down is waited for a little before the refusal. (On a network file system
without flock support, run one controller per store by hand.)
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class StoreLockedError(RuntimeError):
    """Another live controller holds the job store."""


class StoreLock:
    def __init__(self, store_path: str | Path, wait_s: float = 20.0) -> None:
        self.path = Path(f"{store_path}.lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")  # noqa: SIM115 - held open for the controller's life
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.path.read_text().strip() or "unknown"
                    self._file.close()
                    raise StoreLockedError(
                        f"state_dir: another controller holds the job store {store_path} ({holder}); "
                        "stop it, or give this one another state directory"
                    ) from None
                time.sleep(0.2)
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
