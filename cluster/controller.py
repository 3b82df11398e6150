"""The controller: a named Ray actor that owns the job store, the device pool and the queue.

It validates every submission once (a bad spec is refused with the field's name and nothing is
stored) and writes jobs to SQLite. A scheduling thread places the head of the queue (priority, then
submit time) on free workers (``cluster.scheduler``), so jobs on disjoint worker groups run at once,
each segment driven by its own thread (``cluster.segment_runner``); a higher-priority job that does
not fit pauses lower ones at a step boundary. Every change of a job's state goes through the state
machine of ``cluster.job_states``, which the store enforces; what a failed attempt leads to is the
failure policy's choice (``cluster.failure_policy``). Its methods are the service's API (the Python
client and the CLI call them). On start it re-queues jobs a previous controller left holding workers.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray

from cluster.admission import check_client_token, check_output_dir, check_priority
from cluster.errors import SpecError, TenantLimit
from cluster.failure_policy import FailurePolicy, RetryWorkerDeaths, is_storage_error
from cluster.job_files import JobFiles
from cluster.jobs import parse_job
from cluster.jobs.image import Segment
from cluster.jobs.spec import JobSpec
from cluster.metrics import ServiceMetrics
from cluster.names import CONTROLLER_NAME as CONTROLLER_NAME  # re-exported
from cluster.names import NAMESPACE as NAMESPACE
from cluster.outputs import partial_directory
from cluster.recheck import RECHECK_TOKEN, Rechecks
from cluster.scheduler import (
    CostModelDegreeRule,
    DegreeRule,
    RunningJob,
    WorkerBook,
    auto_choice,
    choose_pool,
    pools_to_pause,
    simple_degree_rule,
)
from cluster.segment_runner import SegmentRunner
from cluster.store import DEFAULT_TENANT, JobRecord, JobStore
from cluster.store_lock import StoreLock
from cluster.tenants import OPEN_TENANT, Tenant, TokenStore
from cluster.versions import package_versions
from runtime.pool import PoolConfig
from runtime.pool_set import PoolSet


@dataclass
class ControllerConfig:
    state_dir: str = ".tessera"
    """Folder of the job store (jobs.sqlite) and per-job logs; absolute once the client resolves it."""
    pool: PoolConfig = field(default_factory=PoolConfig)
    """The device pool the controller owns (when `pools` is empty)."""
    pools: list[PoolConfig] = field(default_factory=list)
    """Several named pools (e.g. one per GPU kind, or GPUs beside CPUs), in order of preference; a job's
    `device` field picks among them. Empty: the one `pool`."""
    poll_s: float = 0.5
    """How long the scheduling thread sleeps when the queue is empty (a submit wakes it at once)."""
    checkpoint_every: int = 5
    """Steps (a video: queue ticks) between checkpoints of a running job's state; a dead worker costs
    at most this many."""
    max_attempts: int = 3
    """Attempts ending in a worker failure before a job is marked failed (the default failure policy)."""
    failure_policy: FailurePolicy | None = None
    """What a failed attempt leads to (``cluster.failure_policy``); None: retry worker deaths up to
    `max_attempts` times and fail on any other error."""
    store_lock_wait_s: float = 20.0
    """How long a new controller waits for the store's previous controller to let go of it (one winding down)
    before it refuses to start."""
    output_roots: list[str] | None = None
    """Folders jobs may write their outputs under (absolute; symlinks resolved before the check); None:
    anywhere this process can write (an embedded client). `tessera serve` confines to ./outputs by default."""
    cache_recheck: float = 0.0
    """Fraction of cached image jobs rendered again at full compute, at the lowest priority (idle worker time), to
    measure the cache's PSNR into their metadata.json (``cluster.recheck``); 0: none."""
    preempt: bool = True
    """Pause a running job at a step boundary when a higher-priority job is queued."""
    degree_rule: str = "cost"
    """degree=auto by "cost" (the cost model, parallel.cost) or "simple" (band height only)."""
    cost_device: str = "auto"
    """Device name in parallel/cost/specs.yaml; "auto": cpu-core on CPU pools (GPU pools need a name)."""
    cost_link: str = "auto"
    """Link name in parallel/cost/specs.yaml; "auto": loopback on CPU pools."""


class Controller:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.files = JobFiles(config.state_dir)
        self.state_dir = self.files.state_dir
        self.lock = StoreLock(self.files.store_path, config.store_lock_wait_s)  # first: a second controller stops here
        try:
            self.store = JobStore(self.files.store_path)
            self.tokens = TokenStore(self.files.store_path)
            self.recovered = self.store.recover()
            self.pools = PoolSet(config.pools or [config.pool], owner=self._pool_owner())
        except BaseException:
            self.lock.release()
            raise
        self.degree_rules = {name: self._degree_rule(self.pools.kind(name)) for name in self.pools.names}
        self.book = WorkerBook(self.pools.size)
        self.running: dict[str, RunningJob] = {}
        self._pausing: set[str] = set()
        self._specs: dict[str, JobSpec] = {}
        """Every job's validated spec, by id: validated once (at submit, or when a restarted controller
        first meets a stored job), so placing a job reads nothing from disk."""
        self._threads: dict[str, threading.Thread] = {}
        self._unwritten: list[tuple[str, str, dict]] = []
        """Ends of attempts the store refused to record (a full disk); written before any job is placed again."""
        self._place_refused: tuple[str, str] | None = None
        """(job id, error) of the placement the store refused while it takes no writes: said on stderr once, not every
        poll, and in the controller's log once a job is placed again (the log is on the same full disk)."""
        self._lock = threading.RLock()  # re-entered when a job's end is recorded as its workers are freed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.runner = SegmentRunner(
            self.store,
            self.files,
            self.pools,
            config.failure_policy or RetryWorkerDeaths(config.max_attempts),
            config.checkpoint_every,
            self._stop,
            self._is_pausing,
            self._forget_workers,
            self._end,
        )
        self.metrics = ServiceMetrics()
        self.runner.metrics = self.metrics
        if not 0.0 <= config.cache_recheck <= 1.0:
            raise ValueError(f"cache_recheck: a fraction of jobs in [0, 1], got {config.cache_recheck}")
        if config.cache_recheck:
            self.runner.rechecks = Rechecks(config.cache_recheck, self.files, self.runner.calibrations, self._submit_checked)
        self._thread = self._start_scheduler()
        self._watchdog = threading.Thread(target=self._watch, name="tessera-watchdog", daemon=True)
        self._watchdog.start()

    # --- API --------------------------------------------------------------------------------------
    def submit(
        self, spec: dict, priority: int = 0, client_token: str | None = None, tenant: dict | None = None
    ) -> dict:
        """Validate and queue a job; a client token already seen returns the existing job. `tenant`: who
        submits it (``cluster.tenants.Tenant`` as a mapping; None: the default tenant, no limits): a priority
        above its ceiling or one job too many waiting is refused (TenantLimit), and its client tokens are its
        own (another tenant's same token is another job)."""
        check_priority(priority)
        check_client_token(client_token)
        if client_token is not None and client_token.startswith(RECHECK_TOKEN):
            raise SpecError("client_token", f"tokens starting {RECHECK_TOKEN!r} are the service's own (shadow re-checks)")
        owner = Tenant(**tenant) if tenant is not None else OPEN_TENANT
        if owner.max_priority is not None and priority > owner.max_priority:
            raise TenantLimit("priority", f"{priority} is above tenant {owner.name!r}'s ceiling {owner.max_priority}")
        if client_token is not None and owner.name != DEFAULT_TENANT:
            client_token = f"{owner.name}/{client_token}"
        return self._submit_checked(spec, priority, client_token, owner)

    def _submit_checked(
        self, spec: dict, priority: int, client_token: str | None, owner: Tenant = OPEN_TENANT
    ) -> dict:
        checked = parse_job(spec)
        check_output_dir(checked.output_dir, self.config.output_roots)
        if getattr(checked, "image", ""):  # an image-to-video job's conditioning image
            self._check_not_anothers_output(checked.image, owner)
        self._check_fits(checked)
        record, created = self.store.submit(checked.stored(), priority, client_token, owner.name, owner.max_queued)
        if created:
            self._specs[record.id] = checked
            self.files.log(record.id, f"submitted with priority {priority}")
        self._wake.set()
        return asdict(record)

    def _owned(self, job_id: str, tenant: str | None) -> JobRecord:
        """The job, if `tenant` (None: anyone) owns it; another tenant's job is as unknown as a missing one."""
        record = self.store.get(job_id)
        if tenant is not None and record.tenant != tenant:
            raise KeyError(f"job_id: no job {job_id!r}")
        return record

    def get(self, job_id: str, tenant: str | None = None) -> dict:
        return asdict(self._owned(job_id, tenant))

    def list(self, state: str | None = None, tenant: str | None = None) -> list[dict]:
        return [asdict(r) for r in self.store.list(state, tenant)]

    def cancel(self, job_id: str, tenant: str | None = None) -> dict:
        self._owned(job_id, tenant)
        record = self.store.cancel(job_id)
        if record.state == "cancelled":  # outputs it kept for a resume (a video's finished blocks)
            partial = partial_directory(record.spec.get("output_dir", "outputs"), job_id)
            shutil.rmtree(partial, ignore_errors=True)
        self.files.log(job_id, "cancel requested" if record.cancel_requested else f"now {record.state}")
        return asdict(record)

    def set_priority(self, job_id: str, priority: int, tenant: dict | None = None) -> dict:
        """Re-prioritise a job that has not ended, within its tenant's ceiling (``tenant`` as in ``submit``);
        a running one keeps its workers, but a more urgent queued job may now pause it (or no longer)."""
        check_priority(priority)
        owner = Tenant(**tenant) if tenant is not None else OPEN_TENANT
        self._owned(job_id, owner.name if tenant is not None else None)
        if owner.max_priority is not None and priority > owner.max_priority:
            raise TenantLimit("priority", f"{priority} is above tenant {owner.name!r}'s ceiling {owner.max_priority}")
        record = self.store.set_priority(job_id, priority)
        if record is None:
            raise SpecError("state", f"job {job_id} has ended ({self.store.get(job_id).state}): its priority no longer matters")
        with self._lock:
            if job_id in self.running:
                self.running[job_id].priority = priority
        self.files.log(job_id, f"priority set to {priority}")
        self._wake.set()
        return asdict(record)

    def pools_report(self, tenant: str | None = None, busy_timeout_s: float = 1.0) -> list[dict]:
        """Each pool with its workers: where each runs (node, pid, device), the job it holds (another tenant's
        job shows as ``"busy"``: its id is theirs) and its seconds spent rendering (None when the worker did not
        answer within ``busy_timeout_s``: it is inside a long call)."""
        with self._lock:
            holding = {w: job_id for job_id, job in self.running.items() for w in job.workers}
        owners = {job_id: self.store.get(job_id).tenant for job_id in set(holding.values())}
        calls = [w.busy_seconds.remote() for w in self.pools.workers]
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=busy_timeout_s)
        done = set(ready)
        busy = [ray.get(c) if c in done else None for c in calls]
        infos = self.pools.infos
        pools = []
        for pool in self.pools.describe():
            workers = []
            for index in pool["workers"]:
                job_id = holding.get(index)
                if job_id is not None and tenant is not None and owners.get(job_id) != tenant:
                    job_id = "busy"
                info = infos[index]
                workers.append({
                    "index": index,
                    "node_ip": info.get("node_ip"),
                    "hostname": info.get("hostname"),
                    "pid": info.get("pid"),
                    "device": info.get("device"),
                    "job": job_id,
                    "busy_s": busy[index],
                })
            pools.append({"name": pool["name"], "device": pool["device"], "workers": workers})
        return pools

    def logs(self, job_id: str, tenant: str | None = None) -> str:
        self._owned(job_id, tenant)  # a clear error for an unknown job
        return self.files.read_log(job_id)

    def preview(self, job_id: str, tenant: str | None = None, since: int = -1) -> dict | None:
        """The job's latest preview ({unit, width, height, png: base64}), if taken after unit `since`; None
        before its first checkpoint (and for jobs long ended: only the latest previews are kept)."""
        self._owned(job_id, tenant)
        preview = self.runner.previews.get(job_id)
        return preview if preview is not None and preview["unit"] > since else None

    def authenticate(self, token: str | None, open_allowed: bool) -> dict | None:
        """The tenant of a bearer token (None: refused); see ``cluster.tenants.TokenStore.authenticate``."""
        tenant = self.tokens.authenticate(token, open_allowed)
        return tenant.to_dict() if tenant is not None else None

    def info(self) -> dict:
        with self._lock:
            running = {job_id: list(job.workers) for job_id, job in self.running.items()}
            free = sorted(self.book.free)
        return {
            "workers": self.pools.size,
            "device": "+".join(sorted({self.pools.kind(name) for name in self.pools.names})),
            "pools": self.pools.describe(),
            "state_dir": str(self.state_dir),
            "running": running,
            "free_workers": free,
            "pool": self.pools.infos,
            "recovered": self.recovered,
            "versions": package_versions(),
        }

    def worker_busy_seconds(self) -> list[float]:
        """Per pool worker, the seconds it has spent rendering (for utilisation figures)."""
        return ray.get([w.busy_seconds.remote() for w in self.pools.workers])

    def stop(self) -> None:
        """Stop scheduling after the running jobs' current steps (they go back to the queue), and
        release the pool."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=600)
        for thread in list(self._threads.values()):
            thread.join(timeout=600)
        self.pools.shutdown()
        self.lock.release()

    def _pool_owner(self) -> str:
        """The name of this store's controller's placement groups: a controller replacing a dead one on the
        same store frees the devices the dead one left reserved (the store lock says it is dead)."""
        return "tessera-" + hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:12]

    def _check_not_anothers_output(self, path: str, owner: Tenant) -> None:
        """A tenant's job may not read a file inside another tenant's job outputs (``outputs/<job-id>/`` or its
        partial folder): refused as the file a tenant cannot see, in the words of a missing one, so that the
        refusal says nothing of the other job. The open service (no tokens: one tenant) reads anything it can."""
        if owner.name == DEFAULT_TENANT:
            return
        for folder in Path(path).parents:
            name = folder.name.removeprefix(".").removesuffix(".partial")
            try:
                record = self.store.get(name)
            except KeyError:
                continue
            if record.tenant != owner.name:
                raise SpecError("image", f"no such file {path!r}")

    def _check_fits(self, spec: JobSpec) -> None:
        """Refuse a job no pool can run: a `device` no pool matches, or a degree above every allowed
        pool's size (SpecError naming the field)."""
        for name, device in spec.device_requests().items():
            allowed = self.pools.matching(device)
            if not allowed:
                pools = ", ".join(f"{p['name']} ({p['device']}, {len(p['workers'])})" for p in self.pools.describe())
                raise SpecError(name, f"no pool is named {device!r} or has that device kind; pools: {pools}")
            spec.check_fits(max(len(self.pools.indices(pool)) for pool in allowed))

    def _allowed_pools(self, device: str) -> dict[str, set[int]]:
        return {name: set(self.pools.indices(name)) for name in self.pools.matching(device)}

    # --- scheduling ---------------------------------------------------------------------------------
    def _start_scheduler(self) -> threading.Thread:
        thread = threading.Thread(target=self._schedule, name="tessera-scheduler", daemon=True)
        thread.start()
        return thread

    def _end(self, job_id: str, state: str, **fields) -> None:
        """Record how a job's attempt ended; if the store cannot take the write (a full disk, a locked database),
        keep it and stop placing jobs until it can: a job never stays running because its end was lost."""
        try:
            self.store.finish(job_id, state, **fields)
        except Exception as err:
            if not is_storage_error(err):
                raise
            with self._lock:
                self._unwritten.append((job_id, state, fields))
            self.files.log_controller(
                f"the job store refused a write ({err}): job {job_id} ends {state} once it is writable again; "
                "no job is placed until then"
            )

    def _write_unwritten(self) -> bool:
        """Write the ends the store refused before; True when none is left."""
        with self._lock:
            pending, self._unwritten = self._unwritten, []
        for index, (job_id, state, fields) in enumerate(pending):
            try:
                self.store.finish(job_id, state, **fields)
            except Exception as err:  # noqa: BLE001
                if not is_storage_error(err):
                    self.files.log_controller(f"the end of job {job_id} ({state}) could not be recorded: {err}")
                    continue
                with self._lock:
                    self._unwritten = pending[index:] + self._unwritten
                return False
            self.files.log_controller(f"the job store takes writes again: job {job_id} ended {state}")
        return True

    def _schedule(self) -> None:
        while not self._stop.is_set():
            if self._unwritten and not self._write_unwritten():
                self._wake.wait(self.config.poll_s)
                continue
            try:
                placed = self._place_head()
            except Exception:  # noqa: BLE001 - the queue must keep moving; _place_head fails the job it can name
                self.files.log_controller("scheduler error:\n" + traceback.format_exc())
                placed = False
            if not placed:
                self._wake.wait(self.config.poll_s)
                self._wake.clear()

    def _watch(self) -> None:
        """Restart the scheduling thread if it ever dies (it should not: every error is caught per job); refresh
        the queue and state gauges (``cluster.metrics``)."""
        while not self._stop.wait(max(1.0, 4 * self.config.poll_s)):
            if not self._thread.is_alive() and not self._stop.is_set():
                self.files.log_controller("the scheduler thread had died; restarted")
                self._thread = self._start_scheduler()
            try:
                self.metrics.refresh(*self.store.counts())
            except Exception as err:  # noqa: BLE001 - metrics must never stop the watchdog (a locked store)
                self.files.log_controller(f"metrics not refreshed: {err}")

    def _spec_of(self, job: JobRecord) -> JobSpec:
        """The job's validated spec; a job this controller has not met (it was restarted) is validated now,
        once."""
        if job.id not in self._specs:
            self._specs[job.id] = parse_job(job.spec)
        return self._specs[job.id]

    def _fail_unplaced(self, job: JobRecord, reason: str) -> None:
        """A queued job that can no longer run (its model is gone, no pool matches any more)."""
        if self.store.place(job.id) is not None:
            self.store.finish(job.id, "failed", error=reason)
            self.files.log(job.id, f"failed: {reason}")
        self._specs.pop(job.id, None)

    def _place_head(self) -> bool:
        """Start the head of the queue if its workers are free; else pause lower jobs for it.
        True when a job started (the next one may fit too)."""
        head = self.store.next_runnable()
        if head is None:
            return False
        try:
            placed = self._place(head)
        except Exception as err:  # noqa: BLE001 - one job's trouble must not stop the queue behind it
            if is_storage_error(err):  # a full disk is not the job's fault: it stays queued, placed once there is room
                if self._place_refused is None or self._place_refused[0] != head.id:
                    self._place_refused = (head.id, str(err))
                    self.files.log_controller(
                        f"the job store refused a write ({err}) placing job {head.id}: it stays queued until the "
                        "store takes writes again"
                    )
                return False
            self.files.log(head.id, "controller error while placing:\n" + traceback.format_exc())
            self._fail_unplaced(head, f"controller error while placing: {type(err).__name__}: {err}")
            return True
        if placed and self._place_refused is not None:
            refused, self._place_refused = self._place_refused, None
            self.files.log_controller(
                f"the job store takes writes again: job {refused[0]} stayed queued while it refused ({refused[1]})"
            )
        return placed

    def _place(self, head: JobRecord) -> bool:
        try:
            spec = self._spec_of(head)
        except SpecError as err:  # valid when a previous controller took it, but e.g. its model is gone since
            self._fail_unplaced(head, str(err))
            return True
        segment = spec.segment_from(head.checkpoint_step or 0)
        model_key = f"{spec.model_path(segment.model)}|{spec.dtype}"
        allowed = self._allowed_pools(segment.device)
        if not allowed:  # a restarted controller with other pools than the one that took the job
            self._fail_unplaced(head, f"device: no pool matches {segment.device!r} any more")
            return True
        with self._lock:
            current = self.store.next_runnable()  # a job queued again since the look (its next segment) may go first
            if current is None or current.id != head.id:
                return True
            placement = choose_pool(spec, segment.model, model_key, allowed, self.book, self.degree_rules)
            if placement is None:
                self._pause_for(head, spec, allowed)
                return False
            job = self.store.place(head.id)
            if job is None:  # cancelled between the look and the place
                return True
            pool_name, degree = placement
            choice = None
            if getattr(spec.parallel, "strategy", "") == "auto":  # the plan that degree came from
                free = len(self.book.free & allowed[pool_name])
                choice = auto_choice(spec, segment.model, free, self.degree_rules[pool_name])
            workers = self.book.take(degree, model_key, among=allowed[pool_name])
            self.running[job.id] = RunningJob(job.id, job.priority, job.submitted_at, workers)
            thread = threading.Thread(
                target=self._run_segment,
                args=(job, spec, segment, workers, choice),
                name=f"tessera-job-{job.id}",
                daemon=True,
            )
            self._threads[job.id] = thread
        thread.start()
        return True

    def _pause_for(self, head: JobRecord, spec: JobSpec, allowed: dict[str, set[int]]) -> None:
        """Ask lower-priority jobs to pause at their next step boundary so that ``head`` fits (lock held)."""
        if not self.config.preempt:
            return
        running = list(self.running.values())
        victims = pools_to_pause(head.priority, spec.min_workers(), allowed, set(self.book.free), running, self._pausing)
        for victim in victims:
            if self.store.pausing(victim):
                self._pausing.add(victim)
                self.files.log(victim, f"pausing for {head.id} (priority {head.priority})")

    def _run_segment(
        self, job: JobRecord, spec: JobSpec, segment: Segment, workers: list[int], choice: dict | None = None
    ) -> None:
        """Run one segment of `job` on `workers`, and free them whatever happens."""
        released: list[bool] = []

        def release(before: Callable[[], None] | None = None) -> None:
            """Free the workers for the next job as soon as they are done (before outputs are written).

            ``before`` runs in the same step, under the scheduler's lock: a job going back to the queue (its next
            segment) is recorded there before the scheduler can see its workers free, so that a lower-priority
            job cannot take them in between."""
            with self._lock:
                if released:
                    return
                released.append(True)
                try:
                    if before is not None:
                        before()
                finally:
                    self.running.pop(job.id, None)
                    self._pausing.discard(job.id)
                    self.book.give_back(workers)
            self._wake.set()

        try:
            self.runner.run(job, spec, segment, workers, release, choice)
        except Exception as err:  # noqa: BLE001 - a bookkeeping error must not leave the job running forever
            self.files.log(job.id, "controller error:\n" + traceback.format_exc())
            state = "queued" if is_storage_error(err) else "failed"  # a full disk is not the job's fault
            try:
                self._end(job.id, state, error=f"controller error: {type(err).__name__}: {err}")
            except Exception:  # noqa: BLE001 - already final
                pass
        finally:
            release()
            with self._lock:
                if self._threads.get(job.id) is threading.current_thread():  # not the job's next attempt's
                    self._threads.pop(job.id)
                try:
                    if self.store.get(job.id).state in ("succeeded", "failed", "cancelled"):
                        self._specs.pop(job.id, None)
                except Exception:  # noqa: BLE001 - an unreadable store: the spec stays cached, no harm
                    pass
            self._wake.set()  # the job may be runnable again (paused, next segment, retry)

    def _is_pausing(self, job_id: str) -> bool:
        return job_id in self._pausing

    def _forget_workers(self, workers: list[int]) -> None:
        """These workers were replaced by fresh processes: their model caches are empty."""
        with self._lock:
            self.book.forget(workers)

    def _degree_rule(self, kind: str) -> DegreeRule:
        """degree=auto's rule for one pool: the cost model for its device kind where it knows one."""
        config = self.config
        if config.degree_rule not in ("cost", "simple"):
            raise ValueError(f"degree_rule: expected 'cost' or 'simple', got {config.degree_rule!r}")
        cpu = kind == "cpu"
        device = config.cost_device if config.cost_device != "auto" else ("cpu-core" if cpu else None)
        link = config.cost_link if config.cost_link != "auto" else ("loopback" if cpu else None)
        if config.degree_rule == "simple" or device is None or link is None:
            return simple_degree_rule
        return CostModelDegreeRule(device, link)
