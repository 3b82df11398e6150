"""Shared benchmark plumbing: the machine and versions, alternating runs, medians, BENCHMARKS.md sections.

Every benchmark writes its own section of BENCHMARKS.md (between markers), so benchmarks can be re-run
one at a time without erasing the others' figures.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEach section is written by the benchmark named in it; re-run that command to refresh it.\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {gpu}"


def versions() -> str:
    from cluster.versions import package_versions

    v = package_versions()
    return ", ".join(f"{k} {v[k]}" for k in ("python", "torch", "ray", "diffusers", "deepspeed") if k in v)


def provenance(command: str) -> str:
    return (
        f"- command: `{command}`\n- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"- machine: {machine()}\n- versions: {versions()}\n"
    )


def alternate(runs: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each measurement in turn (A, B, C, A, B, C ...) so machine noise hits all alike.

    Each callable returns the figure it measured (e.g. seconds per step); warm-up rounds are dropped.
    """
    results: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + repeats):
        for name, run in runs.items():
            value = run()
            if round_index >= warmup:
                results[name].append(value)
            print(f"  round {round_index} {name}: {value:.4g}", file=sys.stderr, flush=True)
    return results


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has been busy since boot, every process and the kernel alike (``/proc/stat``:
    user, nice, system, irq, softirq), or None where there is no ``/proc/stat``. Two readings around a run give what
    the run and everything beside it took from the cores: a run that keeps them all busy cannot go faster by
    scheduling, only by doing less work."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100): a value that occurred, however few the values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md."""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``env`` set in this process's environment for the block, as it was after: the processes ``spawn_ranks``
    starts inside it take it (a spawned process inherits the environment as it is when it starts)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def spawn_ranks(target: Callable[..., None], world: int, *args: object) -> list:
    """Run ``target(rank, world, *args, port, queue)`` in ``world`` spawned processes and return what each put
    on ``queue``, sorted (results start with the rank). ``port`` is a free loopback port for a gloo group."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, world, *args, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = []
    deadline = time.monotonic() + 1800
    while len(results) < len(procs):
        try:
            results.append(queue.get(timeout=5))
        except Empty:  # a rank that died puts nothing: stop waiting for it (its peers may hang in the group)
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"a rank exited with {dead[0]}" if dead else "ranks timed out") from None
    results.sort()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"worker exited with {p.exitcode}")
    return results


class DroppingWriter:
    """A stage-0 sink that counts decoded frames and keeps none (the StreamingMP4Writer interface): where no ffmpeg
    is (the lent GPU machine's image has none), a render is timed without its MP4 encoding."""

    def __init__(self) -> None:
        self.frames = 0

    def append(self, frames) -> None:
        self.frames += int(frames.shape[0])

    def close(self) -> str:
        return "(dropped)"

    def abort(self) -> None:
        pass
