"""What a killed worker costs a job: the extra wall time of a render whose worker is SIGKILLed mid-way.

    .venv/bin/python -m bench.recovery --repeats 5

An embedded service (`Client`, Ray given exactly the pool's CPUs, two workers, checkpoints every 2 steps)
renders the same patch-parallel job (built-in model, 2 workers, sync) twice per round, in turn: once
undisturbed, and once with one of its workers SIGKILLed (the process, as the OOM killer or a lost node
would) as soon as the job reports `--kill-at` steps. The recovery time is the difference of the two wall
times (submit to succeeded), median over rounds: it holds the failure's detection, the replacement of the
group's workers, the model reload, the group's re-formation and the steps redone since the checkpoint.
Writes the "recovery" section of BENCHMARKS.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time

import ray

from bench.common import alternate, median, provenance, write_section

TARGET_S = 5.0


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--kill-at", type=int, default=5, help="steps done when a worker is killed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    command = "python -m bench.recovery " + " ".join(sys.argv[1:] if argv is None else argv)

    from cluster.client import Client
    from runtime.pool import PoolConfig

    state = tempfile.mkdtemp(prefix="tessera-bench-recovery-")
    client = Client(state_dir=state, pool=PoolConfig(workers=2, device="cpu"), checkpoint_every=2)
    seeds = iter(range(10**6))

    def render(kill: bool) -> float:
        spec = {
            "height": args.size,
            "width": args.size,
            "steps": args.steps,
            "seed": next(seeds),
            "output_dir": f"{state}/outputs",
            "parallel": {"strategy": "patch", "degree": 2, "mode": "sync"},
        }
        started = time.monotonic()
        job = client.submit(spec)
        if kill:
            while job.status()["steps_done"] < args.kill_at:
                time.sleep(0.005)
            victim = ray.get(client.controller.info.remote())["pool"][1]["pid"]
            os.kill(victim, signal.SIGKILL)
        record = job.wait(timeout_s=600)
        if record["state"] != "succeeded":
            raise RuntimeError(f"job {job.id} {record['state']}: {job.logs()}")
        return time.monotonic() - started

    runs = alternate({"undisturbed": lambda: render(False), "a worker killed": lambda: render(True)}, args.repeats, args.warmup)
    client.close()
    extra = [killed - plain for plain, killed in zip(runs["undisturbed"], runs["a worker killed"])]
    body = f"""## Recovery from a killed worker

{provenance(command)}
A {args.size}x{args.size} render of the built-in model, {args.steps} steps, patch sync on 2 workers of an embedded
service (Ray given exactly 2 CPUs, checkpoints every 2 steps); in every other render one worker process is
SIGKILLed when the job has done {args.kill_at} steps. Medians over {args.repeats} alternating rounds after
{args.warmup} warm-up round(s):

| render | wall s (median) | runs |
|---|---|---|
| undisturbed | {median(runs["undisturbed"]):.2f} | {", ".join(f"{v:.2f}" for v in runs["undisturbed"])} |
| a worker killed | {median(runs["a worker killed"]):.2f} | {", ".join(f"{v:.2f}" for v in runs["a worker killed"])} |

Recovery time (killed - undisturbed, per round): median **{median(extra):.2f} s** ({", ".join(f"{v:.2f}" for v in extra)});
target < {TARGET_S:.0f} s: **{"met" if median(extra) < TARGET_S else "not met"}**.
"""
    print(body)
    if not args.no_write:
        write_section("recovery", body)
    return body


if __name__ == "__main__":
    main()
