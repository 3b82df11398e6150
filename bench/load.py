"""Load on the job service: many small jobs submitted at once from several client threads.

    .venv/bin/python -m bench.load --jobs 200 --threads 4

A real controller actor, SQLite store and 2-worker Ray pool on this machine. Every job carries a
client token, and each thread also resubmits one of its tokens, so duplicates would show. Checks
that every job completed exactly once (store rows, output folders), and measures per-job scheduler
overhead (a job's wall time in the controller minus the worker compute its metadata reports) and
worker utilisation while the queue is non-empty (seconds the workers spent rendering, counted on
the workers, over workers x the window from the first submission to the last job's start, and to
the last finish). Writes the "job-service-load" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray

from bench.common import provenance, write_section
from cluster.client import Client
from runtime.pool import PoolConfig


def small_job(outputs: Path, size: int, steps: int, seed: int) -> dict:
    """A small image job of the built-in image model on one worker, its output under ``outputs``."""
    return {
        "height": size,
        "width": size,
        "steps": steps,
        "seed": seed,
        "output_dir": str(outputs),
        "parallel": {"strategy": "none"},
    }


def start_service(prefix: str, workers: int) -> tuple[Path, Client]:
    """A fresh temporary folder (its ``state`` the controller's) and a real controller (SQLite store,
    ``workers``-worker CPU pool) on a local Ray cluster of as many CPU slots."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    return root, Client(state_dir=root / "state", pool=PoolConfig(workers=workers, device="cpu"))


def warm_up(client: Client, outputs: Path, workers: int, size: int, steps: int) -> None:
    """One small job per worker, run to its end: every worker loads the model once."""
    warm = [client.submit(small_job(outputs, size, steps, i)) for i in range(workers)]
    for job in warm:
        job.wait(timeout_s=300)


def exactly_once(records: list[dict], ids: list[str], stored: list[dict], outputs: Path) -> dict:
    """Whether every job ran exactly once: ``records`` the jobs' final records, ``ids`` every id a submission
    returned, ``stored`` the store's rows of this load, ``outputs`` the folder their outputs went to."""
    folders = sorted(p.name for p in outputs.iterdir())
    return {
        "all_succeeded": all(r["state"] == "succeeded" for r in records),
        "stored_rows": len(stored),
        "unique_ids": len(set(ids)),
        "output_folders": len(folders),
        "folders_match_ids": folders == sorted(ids),
        "attempts_max": max(r["attempts"] for r in records),
    }


def run(jobs: int, threads: int, size: int, steps: int, workers: int) -> dict:
    root, client = start_service("tessera-load-", workers)
    outputs = root / "outputs"
    warm_up(client, outputs / "warmup", workers, size, steps)
    busy_before = ray.get(client.controller.worker_busy_seconds.remote())

    submitted: list[list[str]] = [[] for _ in range(threads)]
    duplicates_returned_same: list[bool] = []

    def submitter(t: int) -> None:
        for i in range(t, jobs, threads):
            job = client.submit(small_job(outputs / "load", size, steps, i), client_token=f"load-{i}")
            submitted[t].append(job.id)
        again = client.submit(small_job(outputs / "load", size, steps, t), client_token=f"load-{t}")
        duplicates_returned_same.append(again.id == submitted[t][0])

    started = time.time()
    pool_threads = [threading.Thread(target=submitter, args=(t,)) for t in range(threads)]
    for thread in pool_threads:
        thread.start()
    for thread in pool_threads:
        thread.join()
    submit_s = time.time() - started
    ids = [job_id for ids in submitted for job_id in ids]
    records = [client.job(job_id).wait(timeout_s=3600) for job_id in ids]
    busy_after = ray.get(client.controller.worker_busy_seconds.remote())
    stored = [r for r in client.jobs() if (r["client_token"] or "").startswith("load-")]
    once = exactly_once(records, ids, stored, outputs / "load")
    ray.get(client.controller.stop.remote())
    ray.shutdown()

    busy = sum(busy_after) - sum(busy_before)
    last_start = max(r["started_at"] for r in records)
    last_finish = max(r["finished_at"] for r in records)
    overheads, computes = [], []
    for record in records:
        timings = json.loads(Path(record["outputs"]["metadata"]).read_text())["timings"]
        compute = timings["load_s"] + timings["encode_s"] + timings["denoise_s"] + timings["decode_s"]
        computes.append(compute)
        overheads.append(record["finished_at"] - record["started_at"] - compute)
    return {
        "jobs": jobs,
        "threads": threads,
        "workers": workers,
        "size": size,
        "steps": steps,
        "submit_s": submit_s,
        **once,
        "duplicate_tokens_returned_same_job": all(duplicates_returned_same),
        "makespan_s": last_finish - started,
        "jobs_per_s": jobs / (last_finish - started),
        "compute_s_median": statistics.median(computes),
        "overhead_s_median": statistics.median(overheads),
        "overhead_s_p90": sorted(overheads)[int(0.9 * len(overheads))],
        "utilisation_queue_nonempty": busy / (workers * (last_start - started)),
        "utilisation_to_last_finish": busy / (workers * (last_finish - started)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    result = run(args.jobs, args.threads, args.size, args.steps, args.workers)
    print(json.dumps(result, indent=2))
    if args.no_write:
        return 0
    command = (
        f".venv/bin/python -m bench.load --jobs {args.jobs} --threads {args.threads} "
        f"--size {args.size} --steps {args.steps} --workers {args.workers}"
    )
    r = result
    body = f"""## Job service under load (`bench/load.py`)

{provenance(command)}
{r["jobs"]} jobs of {r["size"]}x{r["size"]}, {r["steps"]} steps, one worker each, submitted at once from
{r["threads"]} client threads (each also resubmitting one of its client tokens) to a controller with a
{r["workers"]}-worker pool.

| check | result |
|---|---|
| all succeeded | {r["all_succeeded"]} |
| rows in the store / unique job ids / output folders | {r["stored_rows"]} / {r["unique_ids"]} / {r["output_folders"]} |
| output folders are exactly the job ids | {r["folders_match_ids"]} |
| resubmitted tokens returned the existing job | {r["duplicate_tokens_returned_same_job"]} |
| most attempts of any job | {r["attempts_max"]} |

| figure | value |
|---|---|
| submitting all jobs | {r["submit_s"]:.2f} s |
| makespan (first submit to last finish) | {r["makespan_s"]:.1f} s ({r["jobs_per_s"]:.2f} jobs/s) |
| worker compute per job, median | {r["compute_s_median"] * 1000:.0f} ms |
| scheduler overhead per job, median / p90 | {r["overhead_s_median"] * 1000:.0f} / {r["overhead_s_p90"] * 1000:.0f} ms |
| worker utilisation while the queue is non-empty (target >= 90%) | {r["utilisation_queue_nonempty"]:.1%} |
| worker utilisation up to the last finish | {r["utilisation_to_last_finish"]:.1%} |

Overhead is a job's wall time in the controller (claimed to recorded finished) minus the worker
compute its metadata reports (load, encode, denoise, decode): process group formation, Ray calls,
SQLite writes, the PNG write, and, since a one-worker job's calls are queued on its worker while the
previous job's last step and decode still run there (`runtime/jobs/image.py`), the wait behind them.
So it is no longer time a worker idles; utilisation is the figure for that: the seconds the workers
spent inside render calls over the wall time, while the queue was non-empty.
"""
    write_section("job-service-load", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
