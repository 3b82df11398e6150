"""Run a function on N real processes (gloo over TCP on 127.0.0.1) and collect what each returns.

``run_ranks(fn, world, *args)`` starts ``world`` processes (forkserver, see ``_context``); each sets one torch thread, joins a
gloo process group and calls ``fn(rank, world, *args)``. The per-rank return values come back in
rank order through a queue. A child's exception fails the caller with the child's traceback; a
hang fails it after ``timeout`` seconds. ``fn`` must be importable (a module-level function).
"""

from __future__ import annotations

import io
import os
import queue
import socket
import sys
import traceback
from collections.abc import Callable
from multiprocessing import forkserver
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dumps(obj: Any) -> bytes:
    """Results travel as bytes: tensors put on a torch.multiprocessing queue are shared through file
    descriptors that vanish when the child exits."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _child(fn: Callable[..., Any], rank: int, world: int, port: int, out: Any, args: tuple) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        result = fn(rank, world, *args)
        out.put((rank, True, _dumps(result)))
    except BaseException:  # noqa: BLE001 - report anything to the parent
        out.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


PRELOAD = ["torch", "torch.distributed", "diffusers", "_parallel_workers"]


def _context() -> Any:
    """A forkserver context that imports torch/diffusers/the test helpers once: children fork from a
    server that has them loaded, instead of each spending seconds importing (spawn). They are still
    fresh processes sharing nothing with the test process; the server runs no torch op, so no
    threads are forked."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    # Python < 3.12 does not hand sys.path to the server, whose preload would then silently skip
    # our helper modules: pass it through PYTHONPATH while the server starts.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + ([old] if old else []))
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    return ctx


class _PortTaken(RuntimeError):
    """Rank 0 could not listen on the port ``free_port`` chose: another process took it in between."""


def run_ranks(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 120.0) -> list[Any]:
    """``[fn(0, world, *args), ..., fn(world-1, world, *args)]``, each run in its own process. A port taken
    between ``free_port`` and rank 0's listen (other tests and Ray start servers meanwhile) is retried on a new one."""
    for _ in range(2):
        try:
            return _run_once(fn, world, args, timeout)
        except _PortTaken:
            pass
    return _run_once(fn, world, args, timeout)


def _run_once(fn: Callable[..., Any], world: int, args: tuple, timeout: float) -> list[Any]:
    ctx = _context()
    out = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(target=_child, args=(fn, r, world, port, out, args), daemon=True) for r in range(world)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors: list[str] = []
    try:
        while len(results) + len(errors) < world:
            try:
                rank, ok, value = out.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(
                    f"{fn.__name__} on {world} ranks: no result after {timeout}s from ranks "
                    f"{sorted(set(range(world)) - set(results))} (hang?)"
                    + ("\n" + "\n".join(errors) if errors else "")
                ) from None
            if ok:
                results[rank] = torch.load(io.BytesIO(value), weights_only=False)
            elif "EADDRINUSE" in value and not results:
                raise _PortTaken(value)
            else:
                errors.append(f"--- rank {rank} ---\n{value}")
                # a failed rank usually leaves its peers blocked: do not wait for them long
                timeout = min(timeout, 15.0)
        if errors:
            raise RuntimeError(
                f"{fn.__name__} failed on {len(errors)} of {world} ranks:\n" + "\n".join(errors)
            )
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    return [results[r] for r in range(world)]
