"""The Python client: submit render jobs to the controller and follow them.

    from cluster.client import Client
    client = Client()                        # embedded: a local Ray cluster and controller for this process
    job = client.submit({"prompt": "red stripes", "height": 512, "width": 512, "steps": 20})
    job.wait(progress=True)
    print(job.result()["image"])
    video = client.submit({"job": "video", "frames": 64, "parallel": {"strategy": "frames", "degree": 2}})
    print(video.result()["video"])

`Client(address="auto")` or `Client(address="ray://host:10001")` joins a cluster where `tessera serve`
runs the controller. `Client(url="http://farm:8000", token="tsr_...")` goes through its HTTP API instead (an
``cluster.http.client.HttpClient``, with the same methods), from any machine that reaches it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from tqdm import tqdm

from cluster.errors import SpecError
from cluster.jobs import progress_total, progress_unit
from cluster.names import CONTROLLER_NAME, NAMESPACE
from cluster.store import FINAL_STATES
from runtime.ray_session import join_cluster

if TYPE_CHECKING:  # the job verbs that only talk to a running controller skip torch and diffusers
    from cluster.controller import ControllerConfig
    from cluster.jobs.spec import JobSpec
    from runtime.pool import PoolConfig


class JobFailed(RuntimeError):
    """The job ended failed or cancelled; `record` holds its final state."""

    def __init__(self, record: dict) -> None:
        super().__init__(f"job {record['id']} {record['state']}: {record.get('error') or ''}".rstrip(": "))
        self.record = record


def _forget_dead_controller(timeout_s: float = 30.0) -> None:
    """A controller that was killed may keep its name for a moment: wait until Ray has released it, so that
    `get_if_exists` creates a new controller instead of returning the dead one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            handle = ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
        except ValueError:
            return  # no controller of that name: a new one can be made
        try:
            ray.get(handle.info.remote(), timeout=10)
            return  # a live one: it will be reused
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            time.sleep(0.2)


def start_controller(config: ControllerConfig, detached: bool = False):
    """The named controller actor, created if no live controller runs in this Ray cluster yet."""
    from cluster.controller_actor import ControllerActor

    _forget_dead_controller()
    actor = ray.remote(ControllerActor).options(
        name=CONTROLLER_NAME,
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached" if detached else None,
        max_concurrency=16,
        num_cpus=0,
    )
    handle = actor.remote(config)
    ray.get(handle.info.remote())
    return handle


class Job:
    def __init__(self, client: Client, record: dict) -> None:
        self.client = client
        self.id = record["id"]
        self._record = record

    def status(self) -> dict:
        self._record = ray.get(self.client.controller.get.remote(self.id))
        return self._record

    def wait(self, progress: bool = False, timeout_s: float | None = None, poll_s: float = 0.2) -> dict:
        """Block until the job reaches a final state; a progress bar follows its steps (a video's ticks)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        spec = self._record["spec"]
        total, unit = progress_total(spec), progress_unit(spec)
        with tqdm(total=total, desc=f"denoising {self.id}", unit=unit, disable=not progress) as bar:
            while True:
                record = self.status()
                bar.update(record["steps_done"] - bar.n)
                if record["state"] in FINAL_STATES:
                    return record
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {record['state']} after {timeout_s} s")
                time.sleep(poll_s)

    def result(self) -> dict:
        """Output paths (image or video, metadata) once the job succeeded; raises JobFailed otherwise."""
        record = self.wait()
        if record["state"] != "succeeded":
            raise JobFailed(record)
        return record["outputs"]

    def cancel(self) -> dict:
        self._record = ray.get(self.client.controller.cancel.remote(self.id))
        return self._record

    def logs(self) -> str:
        return ray.get(self.client.controller.logs.remote(self.id))


class Client:
    def __new__(cls, *args: Any, url: str | None = None, token: str | None = None, **kwargs: Any):
        """With `url`, the HTTP client of a served API (Ray is not used then)."""
        if url is not None:
            from cluster.http.client import HttpClient

            if args or kwargs:
                raise TypeError("Client(url=...) takes only url and token")
            return HttpClient(url, token)
        return super().__new__(cls)

    def __init__(
        self,
        address: str | None = None,
        state_dir: str | Path = ".tessera",
        pool: PoolConfig | None = None,
        connect_only: bool = False,
        pools: list[PoolConfig] | None = None,
        url: str | None = None,
        token: str | None = None,
        **controller_options: Any,
    ) -> None:
        """`url`, `token`: see ``__new__`` (an HttpClient is returned then, and this is not called).
        `connect_only`: use the controller `tessera serve` runs; never start one (CLI verbs).
        `pools`: several named pools instead of `pool` (a job's `device` picks among them).
        `controller_options`: further ControllerConfig fields (checkpoint_every, preempt, ...)."""
        self._owns_ray = False
        if not ray.is_initialized():
            if address is None:
                from runtime.pool import PoolConfig

                configs = list(pools or []) or [pool or PoolConfig()]
                ray.init(
                    address="local",  # embedded: our own cluster, even if a `ray start` one runs here
                    num_cpus=sum(c.workers for c in configs),
                    resources=_custom_resources(configs),
                    namespace=NAMESPACE,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                )
                self._owns_ray = True
            else:
                join_cluster(address, namespace=NAMESPACE)
        if connect_only:
            try:
                self.controller = ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
            except ValueError as err:
                raise ConnectionError(
                    f"no Tessera controller runs in the Ray cluster at {address!r}; start one with `tessera serve`"
                ) from err
            return
        from cluster.controller import ControllerConfig
        from runtime.pool import PoolConfig

        config = ControllerConfig(
            state_dir=str(Path(state_dir).resolve()),
            pool=pool or PoolConfig(),
            pools=list(pools or []),
            **controller_options,
        )
        self.controller = start_controller(config)

    def submit(
        self, spec: JobSpec | dict[str, Any], priority: int = 0, client_token: str | None = None
    ) -> Job:
        """Queue a job: a RenderSpec, a VideoSpec, or their fields as a mapping (a video's with
        "job": "video"). A bad spec raises SpecError naming the field and stores nothing."""
        from cluster.jobs import spec_data

        data = spec_data(spec)
        output_dir = data.get("output_dir", "outputs")
        if isinstance(output_dir, str) and output_dir.strip():
            # absolute, since the controller runs elsewhere; not resolved, so a '..' still gets refused
            data["output_dir"] = str(Path(output_dir).absolute())
        image = data.get("image")  # a video's conditioning image: a file here, read by the workers
        if isinstance(image, str) and image.strip():
            data["image"] = str(Path(image).absolute())
        try:
            record = ray.get(self.controller.submit.remote(data, priority, client_token))
        except SpecError as err:  # Ray's wrapper carries the controller's traceback: the refusal alone
            raise SpecError(err.field, err.message) from None
        return Job(self, record)

    def job(self, job_id: str) -> Job:
        return Job(self, ray.get(self.controller.get.remote(job_id)))

    def jobs(self, state: str | None = None) -> list[dict]:
        return ray.get(self.controller.list.remote(state))

    def close(self, stop_controller: bool = True) -> None:
        """Stop the controller and the local cluster this client started (if it started them);
        `stop_controller=False` when the controller is already gone."""
        if self._owns_ray:
            if stop_controller:
                ray.get(self.controller.stop.remote())
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _custom_resources(pools: list[PoolConfig]) -> dict[str, float]:
    """What an embedded cluster must offer for these pools' custom resources (labels)."""
    total: dict[str, float] = {}
    for pool in pools:
        for name, amount in pool.resources.items():
            total[name] = total.get(name, 0) + amount * pool.workers
    return total
