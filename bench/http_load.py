"""Load on the HTTP API: many small jobs POSTed from several client threads, each followed over its events.

    .venv/bin/python -m bench.http_load --jobs 200 --threads 8 --rounds 9

A real controller (SQLite store, 2-worker CPU pool) and the Serve application (``cluster.http.app``) on this
machine, two tenants with a token each. Every thread POSTs its share of the jobs to /v1/jobs, each with its
own Idempotency-Key, resubmits the key of its first job once (the same job must come back), then follows each
of its jobs over /v1/jobs/{id}/events until "done", counting the events and bytes delivered. Checks that every
job ran exactly once (the store's rows, the output folders, one "succeeded" per stream, one attempt each) and
reports the submit latency (the HTTP round trip of POST /v1/jobs: p50, p99, max), the events delivered per
second while the streams were open, and the wall time.

Then the API's overhead on one small job's end-to-end time (submit to the result's bytes in hand): over HTTP
(POST, the events until "done", GET the result) against ``Client.submit``, ``wait`` and reading the file, in
alternating rounds on the same controller with nothing else queued (``bench.common.alternate``: one warm-up
round, then ``--rounds`` of each, medians). Writes the "http-load" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import ray

from bench.common import alternate, free_port, median, percentile, provenance, write_section
from bench.load import exactly_once, small_job, start_service, warm_up
from cluster.client import Client
from cluster.http.app import start, stop
from cluster.http.settings import HttpSettings
from cluster.tenants import TokenStore

TENANTS = ("studio-a", "studio-b")
"""The tenants the threads submit as, in turn (thread t as ``TENANTS[t % 2]``)."""
KEY_PREFIX = "http-load-"
"""Every load job's Idempotency-Key starts so (the store keeps it as the job's client token)."""


@dataclass
class Stream:
    """What one job's event stream delivered."""

    events: dict[str, int] = field(default_factory=dict)
    """Events by name (state, progress, preview, done)."""
    bytes: int = 0
    """Bytes read from the stream, keep-alive comments included."""
    states: list[str] = field(default_factory=list)
    """The states its "state" events carried, in order: "succeeded" exactly once when the job ran once."""
    final: str | None = None
    """The state the "done" event carried."""
    opened: float = 0.0
    closed: float = 0.0


def follow(http: httpx.Client, job_id: str) -> Stream:
    """Read the job's server-sent events until the stream ends (after "done")."""
    stream = Stream(opened=time.perf_counter())
    buffer = b""
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"events of {job_id}: HTTP {reply.status_code}")
        for chunk in reply.iter_bytes():
            stream.bytes += len(chunk)
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                _count(stream, block.decode())
    stream.closed = time.perf_counter()
    return stream


def _count(stream: Stream, block: str) -> None:
    """One event block (or a keep-alive comment, which is no event)."""
    name = data = None
    for line in block.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
    if name is None:
        return
    stream.events[name] = stream.events.get(name, 0) + 1
    if name == "state":
        stream.states.append(data["state"])
    if name == "done":
        stream.final = data["state"]


def session(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def submit(http: httpx.Client, spec: dict, key: str | None = None) -> tuple[dict, float]:
    """POST /v1/jobs; the job as the API shows it and the round trip's seconds."""
    headers = {"Idempotency-Key": key} if key else {}
    started = time.perf_counter()
    reply = http.post("/v1/jobs", json={"spec": spec}, headers=headers)
    seconds = time.perf_counter() - started
    if reply.status_code != 201:
        raise RuntimeError(f"POST /v1/jobs: HTTP {reply.status_code}: {reply.text}")
    return reply.json(), seconds


def load(url: str, tokens: dict[str, str], jobs: int, threads: int, outputs: Path, size: int, steps: int) -> dict:
    """The load phase: every thread submits its share (then resubmits its first key), then follows its jobs."""
    ids: list[list[str]] = [[] for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    streams: list[list[Stream]] = [[] for _ in range(threads)]
    resubmitted: list[tuple[bool, float]] = []
    errors: list[BaseException] = []

    def client_thread(t: int) -> None:
        try:
            with session(url, tokens[TENANTS[t % len(TENANTS)]]) as http:
                mine = list(range(t, jobs, threads))
                for i in mine:
                    job, seconds = submit(http, small_job(outputs, size, steps, i), f"{KEY_PREFIX}{i}")
                    ids[t].append(job["id"])
                    latencies[t].append(seconds)
                if mine:  # a deliberate resubmission of a used key: the same job, nothing new stored
                    again, seconds = submit(http, small_job(outputs, size, steps, mine[0]), f"{KEY_PREFIX}{mine[0]}")
                    resubmitted.append((again["id"] == ids[t][0], seconds))
                for job_id in ids[t]:
                    streams[t].append(follow(http, job_id))
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    started = time.perf_counter()
    pool = [threading.Thread(target=client_thread, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    every = [s for per in streams for s in per]
    window = max(s.closed for s in every) - min(s.opened for s in every)
    events = sum(sum(s.events.values()) for s in every)
    submits = [x for per in latencies for x in per]
    return {
        "ids": [job_id for per in ids for job_id in per],
        "wall_s": time.perf_counter() - started,
        "submit_p50_s": percentile(submits, 50),
        "submit_p99_s": percentile(submits, 99),
        "submit_max_s": max(submits),
        "resubmits": len(resubmitted),
        "resubmits_same_job": all(same for same, _ in resubmitted),
        "resubmit_max_s": max((s for _, s in resubmitted), default=0.0),
        "streams": len(every),
        "streams_done_succeeded": sum(s.final == "succeeded" for s in every),
        "streams_one_succeeded_state": sum(s.states.count("succeeded") == 1 for s in every),
        "streams_live": sum(bool(s.states) and s.states[0] != "succeeded" for s in every),
        "events": events,
        "events_by_name": {n: sum(s.events.get(n, 0) for s in every) for n in sorted({n for s in every for n in s.events})},
        "event_bytes": sum(s.bytes for s in every),
        "events_window_s": window,
        "events_per_s": events / window,
    }


def overhead(client: Client, http: httpx.Client, outputs: Path, size: int, steps: int, rounds: int) -> dict:
    """One small job's end-to-end seconds over HTTP and through ``Client.submit``, in alternating rounds."""
    seeds = iter(range(10_000, 20_000))
    phases: dict[str, list[tuple[float, float, float]]] = {"http": [], "client": []}
    """Each round's (submit, until the end is seen, reading the result) seconds, warm-up included."""

    def over_http() -> float:
        started = time.perf_counter()
        job, _ = submit(http, small_job(outputs, size, steps, next(seeds)))
        submitted = time.perf_counter()
        if follow(http, job["id"]).final != "succeeded":
            raise RuntimeError(f"job {job['id']} did not succeed")
        ended = time.perf_counter()
        image = http.get(f"/v1/jobs/{job['id']}/result")
        if image.status_code != 200 or not image.content:
            raise RuntimeError(f"result of {job['id']}: HTTP {image.status_code}")
        done = time.perf_counter()
        phases["http"].append((submitted - started, ended - submitted, done - ended))
        return done - started

    def through_client() -> float:
        started = time.perf_counter()
        job = client.submit(small_job(outputs, size, steps, next(seeds)))
        submitted = time.perf_counter()
        record = job.wait(timeout_s=600)
        ended = time.perf_counter()
        if record["state"] != "succeeded" or not Path(record["outputs"]["image"]).read_bytes():
            raise RuntimeError(f"job {record['id']} did not succeed")
        done = time.perf_counter()
        phases["client"].append((submitted - started, ended - submitted, done - ended))
        return done - started

    times = alternate({"http": over_http, "client": through_client}, repeats=rounds, warmup=1)
    http_s, client_s = median(times["http"]), median(times["client"])
    return {
        "rounds": rounds,
        "http_s": http_s,
        "client_s": client_s,
        "ratio": http_s / client_s,
        "times": times,
        "phases_s": {  # medians over the measured rounds (the warm-up's left out)
            path: dict(zip(("submit", "to_end", "result"), (median(list(x)) for x in zip(*rows[1:]))))
            for path, rows in phases.items()
        },
    }


def run(
    jobs: int, threads: int, rounds: int, size: int, steps: int, workers: int, small: tuple[int, int]
) -> dict:
    load_before = os.getloadavg()
    root, client = start_service("tessera-http-load-", workers)
    outputs = root / "outputs"
    tokens = TokenStore(root / "state" / "jobs.sqlite")
    tenant_tokens = {tenant: tokens.create(tenant)[1] for tenant in TENANTS}
    url = start(HttpSettings(port=free_port(), output_root=str(outputs)))
    try:
        warm_up(client, outputs / "warmup", workers, size, steps)
        busy_before = ray.get(client.controller.worker_busy_seconds.remote())
        figures = load(url, tenant_tokens, jobs, threads, outputs / "load", size, steps)
        busy = sum(ray.get(client.controller.worker_busy_seconds.remote())) - sum(busy_before)
        ids = figures.pop("ids")
        records = [client.job(job_id).status() for job_id in ids]
        # the store keeps a tenant's key as "<tenant>/<key>" (each tenant's keys are its own)
        stored = [r for r in client.jobs() if (r["client_token"] or "").split("/", 1)[-1].startswith(KEY_PREFIX)]
        figures.update(exactly_once(records, ids, stored, outputs / "load"))
        figures["utilisation"] = busy / (workers * figures["wall_s"])
        with session(url, tenant_tokens[TENANTS[0]]) as http:
            figures["overhead"] = [
                overhead(client, http, outputs / f"e2e-{px}", px, n, rounds) for px, n in ((size, steps), small)
            ]
    finally:
        stop()
        ray.get(client.controller.stop.remote())
        ray.shutdown()
    return {
        "jobs": jobs,
        "threads": threads,
        "workers": workers,
        "size": size,
        "steps": steps,
        **figures,
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=9, help="end-to-end rounds of each path (after one warm-up)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--small", type=int, nargs=2, default=[256, 20], metavar=("SIZE", "STEPS"),
        help="the second job the end-to-end overhead is measured on (the first is the load's job)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    r = run(args.jobs, args.threads, args.rounds, args.size, args.steps, args.workers, tuple(args.small))
    print(json.dumps(r, indent=2))
    if args.no_write:
        return 0
    command = (
        f".venv/bin/python -m bench.http_load --jobs {args.jobs} --threads {args.threads} --rounds {args.rounds} "
        f"--size {args.size} --steps {args.steps} --workers {args.workers} --small {args.small[0]} {args.small[1]}"
    )
    overheads = list(zip(((r["size"], r["steps"]), tuple(args.small)), r["overhead"]))
    rounds = overheads[0][1]["rounds"]
    overhead_rows = "\n".join(
        f"| {px}x{px}, {n} steps | {o['http_s']:.3f} | {o['client_s']:.3f} | {o['ratio'] - 1:+.1%} |"
        for (px, n), o in overheads
    )
    phase_names = (
        ("submit", "submit (POST /v1/jobs; `Client.submit`)"),
        ("to_end", "until the end is seen (the event stream's \"done\"; `wait`)"),
        ("result", "the result's bytes (GET /v1/jobs/{id}/result; reading the file)"),
    )
    phase_rows = "\n".join(
        f"| {px}x{px}, {n} steps | {label} | {o['phases_s']['http'][key] * 1000:.1f} | "
        f"{o['phases_s']['client'][key] * 1000:.1f} |"
        for (px, n), o in overheads
        for key, label in phase_names
    )
    loads = " / ".join(f"{x:.2f}" for x in r["load_before"]), " / ".join(f"{x:.2f}" for x in r["load_after"])
    body = f"""## The HTTP API under load (`bench/http_load.py`)

{provenance(command)}- load average (1 / 5 / 15 min) before: {loads[0]}; after: {loads[1]}

{r["jobs"]} jobs of {r["size"]}x{r["size"]}, {r["steps"]} steps, one worker each, POSTed to /v1/jobs from
{r["threads"]} client threads as two tenants (each job with its own Idempotency-Key; each thread then
resubmitting its first key), every job then followed over its event stream until "done", on a
{r["workers"]}-worker CPU pool behind the Serve application.

| check | result |
|---|---|
| all succeeded, most attempts of any job | {r["all_succeeded"]}, {r["attempts_max"]} |
| rows in the store / unique job ids / output folders | {r["stored_rows"]} / {r["unique_ids"]} / {r["output_folders"]} |
| output folders are exactly the job ids | {r["folders_match_ids"]} |
| resubmitted keys returned the existing job ({r["resubmits"]}) | {r["resubmits_same_job"]} |
| streams ending "done: succeeded" / with exactly one "succeeded" state | {r["streams_done_succeeded"]} / {r["streams_one_succeeded_state"]} of {r["streams"]} |
| streams opened while their job was queued or running (the rest replayed a finished job) | {r["streams_live"]} |

| figure | value |
|---|---|
| submit latency (POST /v1/jobs round trip), p50 / p99 / max | {r["submit_p50_s"] * 1000:.0f} / {r["submit_p99_s"] * 1000:.0f} / {r["submit_max_s"] * 1000:.0f} ms |
| events delivered | {r["events"]} ({", ".join(f"{k} {v}" for k, v in r["events_by_name"].items())}), {r["event_bytes"] / 1024:.0f} KiB |
| events per second while streams were open | {r["events_per_s"]:.1f} ({r["events_window_s"]:.1f} s) |
| wall time (first POST to last stream closed) | {r["wall_s"]:.1f} s ({r["jobs"] / r["wall_s"]:.2f} jobs/s) |
| worker utilisation over that time | {r["utilisation"]:.1%} |

A job's end-to-end time, submit to the result's bytes in hand, on the load's job and on a small one,
{rounds} alternating rounds of each path after a warm-up, medians:

| job | HTTP: POST /v1/jobs, events until "done", GET result (s) | `Client.submit`, `wait`, reading the file (s) | the API's overhead (target < 5%) |
|---|---|---|---|
{overhead_rows}

| job | phase, median ms | HTTP | `Client` |
|---|---|---|---|
{phase_rows}

Both paths learn the job ended by polling at 0.2 s (the event stream's replica reads the record so; `Job.wait`
asks the controller so), so either may see the end up to 0.2 s late.
"""
    write_section("http-load", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
