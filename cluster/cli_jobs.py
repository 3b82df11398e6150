"""The job verbs of the `tessera` CLI: render (submit and wait), serve, submit, status, list, wait,
cancel, logs. Job specs are composed by Hydra from the job kind's config (configs/render.yaml, or
configs/video.yaml for job=video) and the overrides given; a bad field is refused with its name before
any worker starts (exit code 2)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from cluster.errors import SpecError

DEFAULT_STATE_DIR = ".tessera"


def _compose(overrides: list[str]):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from cluster.config import compose_job

    try:
        return compose_job(overrides)
    except SpecError:
        raise
    except ValueError as err:
        raise SpecError("job", str(err)) from err
    except (HydraException, OmegaConfBaseException) as err:
        raise _override_error(overrides, str(err)) from err


def _override_error(overrides: list[str], text: str) -> SpecError:
    """Hydra's refusal of an override as one line naming the field: an unknown key with the closest known one
    (or the job kind that has it), a config group option that does not exist with those that do."""
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        return _unknown_override(overrides, unknown.group(1))
    missing = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if missing:
        options = re.findall(r"^\t(\S+)$", text.split("Config search path")[0], flags=re.MULTILINE)
        return SpecError(missing.group(1), f"no config {missing.group(2)!r}; available: {', '.join(options)}")
    first = text.strip().splitlines()[0] if text.strip() else "unreadable override"
    return SpecError("overrides", f"bad override: {first}")


def _unknown_override(overrides: list[str], key: str) -> SpecError:
    """An override of a key the job's config does not have, refused as the spec refuses an unknown field."""
    from omegaconf import DictConfig, OmegaConf

    from cluster.config import compose_job, job_kind_of
    from cluster.jobs import JOB_KINDS
    from cluster.jobs.spec import unknown_field

    parent = key.rpartition(".")[0]
    try:
        node = compose_job([o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key])
        node = OmegaConf.select(node, parent) if parent else node
        known = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    except Exception:  # another override is wrong too: no suggestion then
        known = []
    kind = JOB_KINDS.get(job_kind_of(overrides))
    elsewhere = kind.spec_class().other_kinds_fields() if kind is not None else {}
    return unknown_field(key, known, elsewhere)


def _spec_and_pool(overrides: list[str], embedded: bool = True):
    """The job spec and pool config from Hydra. `embedded`: the job runs on this command's own pool, so a
    degree above pool.workers is refused here; `tessera submit` leaves that to the served controller."""
    from omegaconf.errors import OmegaConfBaseException

    from cluster.config import pool_from_config, spec_from_config

    cfg = _compose(overrides)
    try:
        spec = spec_from_config(cfg)
        pool, address = pool_from_config(cfg)
    except (OmegaConfBaseException, TypeError) as err:
        raise SpecError("config", str(err)) from err
    if embedded and address is None:  # a served controller checks against its own pools
        spec.check_fits(pool.workers)
    return cfg, spec, pool, address


def render(args: argparse.Namespace) -> int:
    """Submit one job to the embedded (or given) cluster and wait for it, with a progress bar."""
    from omegaconf import OmegaConf

    from cluster.client import Client

    if args.cfg:
        print(OmegaConf.to_yaml(_compose(args.overrides)))
        return 0
    cfg, spec, pool, address = _spec_and_pool(args.overrides)
    for note in getattr(spec, "notes", []):  # what validation adjusted (a video's frames rounded up)
        print(f"tessera: note: {note}", file=sys.stderr)
    with Client(address=address, state_dir=args.state_dir, pool=pool) as client:
        job = client.submit(spec)
        record = job.wait(progress=bool(cfg.progress))
        if record["state"] != "succeeded":
            print(f"tessera: job {job.id} {record['state']}: {record.get('error')}", file=sys.stderr)
            print(job.logs(), file=sys.stderr)
            return 1
        outputs = record["outputs"]
    print(f"wrote {outputs[spec.kind]}")
    print(json.dumps({"job_id": job.id, "directory": outputs["directory"]}))
    return 0


def serve(args: argparse.Namespace) -> int:
    """Run the controller until interrupted; other `tessera` commands reach it with --address auto."""
    import ray

    from cluster.client import Client
    from cluster.config import pool_from_config, pools_from_config

    subprocess.Popen(  # its own session: it outlives a SIGKILL of this process and ends what that left running
        [sys.executable, "-m", "cluster.serve_reaper", str(os.getpid())],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cfg = _compose(args.overrides)  # only the pool.*, pools and http parts matter here
    pool, address = pool_from_config(cfg)
    try:
        pools = pools_from_config(cfg)
    except TypeError as err:
        raise SpecError("pools", str(err)) from err
    roots = [str(Path(root).absolute()) for root in (cfg.get("output_roots") or ["outputs"])]
    recheck = float(cfg.get("cache_recheck") or 0.0)
    http = _http_settings(cfg, roots[0], args.state_dir)  # a refused bind stops serve before Ray starts
    client = Client(
        address=address, state_dir=args.state_dir, pool=pool, pools=pools, output_roots=roots, cache_recheck=recheck
    )
    info = ray.get(client.controller.info.remote())
    address_file = Path(info["state_dir"]) / "ray_address"
    address_file.write_text(ray.get_runtime_context().gcs_address + "\n")  # what `--address auto` joins
    print(
        f"tessera controller serving {info['workers']} {info['device']} workers in pools "
        f"{[p['name'] for p in info['pools']]}; state in {info['state_dir']}"
    )
    print(f"Ray address: {ray.get_runtime_context().gcs_address}", flush=True)
    if http.enabled:
        from cluster.http.app import start as start_http

        print(f"HTTP API: {start_http(http)} (OpenAPI at /docs)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(2.0):
            if not _alive(client.controller):  # serve without its controller would answer nothing
                print("tessera: the controller died; serve stops", file=sys.stderr)
                address_file.unlink(missing_ok=True)
                _stop_http(http)
                client._owns_ray = client._owns_ray and address is None
                client.close(stop_controller=False)
                return 1
    except KeyboardInterrupt:
        pass
    address_file.unlink(missing_ok=True)
    _stop_http(http)  # first: no request reaches a controller that is stopping
    ray.get(client.controller.stop.remote())
    client._owns_ray = client._owns_ray and address is None
    client.close()
    return 0


def _http_settings(cfg, output_root: str, state_dir: str):
    """The `http.*` settings, checked: a bind beyond this machine needs a token in the store first."""
    from omegaconf import OmegaConf

    from cluster.http.settings import HttpSettings, check_bind, check_port_free
    from cluster.job_files import JobFiles
    from cluster.tenants import TokenStore

    raw = OmegaConf.to_container(cfg.http, resolve=True) if cfg.get("http") is not None else {}
    try:
        settings = HttpSettings(**raw, output_root=output_root)
    except TypeError as err:
        raise SpecError("http", str(err)) from err
    if settings.enabled:
        check_bind(settings, TokenStore(JobFiles(state_dir).store_path).any())
        check_port_free(settings)
    return settings


def _stop_http(http) -> None:
    if http.enabled:
        from cluster.http.app import stop

        stop()


def _alive(controller) -> bool:
    import ray

    try:
        ray.get(controller.info.remote(), timeout=30)
        return True
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False


def _connect(args: argparse.Namespace):
    """The controller of `tessera serve`: through its HTTP API with --url (and --api-token), from any machine;
    else through Ray: with --address auto, the cluster the serve of this state directory recorded (so another Ray
    cluster on the machine is never joined by mistake), else Ray's own auto."""
    if getattr(args, "url", None):
        from cluster.http.client import HttpClient

        return HttpClient(args.url, args.api_token)
    from cluster.client import Client

    address = args.address
    recorded = Path(getattr(args, "state_dir", DEFAULT_STATE_DIR)) / "ray_address"
    if address == "auto" and recorded.is_file():
        address = recorded.read_text().strip()
    return Client(address=address, connect_only=True)


def submit(args: argparse.Namespace) -> int:
    from cluster.admission import check_client_token, check_priority

    _, spec, _, _ = _spec_and_pool(args.overrides, embedded=False)
    check_priority(args.priority)  # refused here too, before any controller is contacted
    check_client_token(args.token)
    job = _connect(args).submit(spec, priority=args.priority, client_token=args.token)
    print(job.id)
    return 0


def status(args: argparse.Namespace) -> int:
    print(json.dumps(_connect(args).job(args.job_id).status(), indent=2, default=str))
    return 0


def list_jobs(args: argparse.Namespace) -> int:
    from cluster.jobs import progress_total, progress_unit

    for record in _connect(args).jobs(args.state):
        unit = progress_unit(record["spec"]) + "s"
        print(
            f"{record['id']}  {record['state']:9s}  prio {record['priority']:3d}  "
            f"{record['steps_done']}/{progress_total(record['spec'])} {unit}"
        )
    return 0


def wait(args: argparse.Namespace) -> int:
    record = _connect(args).job(args.job_id).wait(progress=True, timeout_s=args.timeout)
    print(json.dumps({"id": record["id"], "state": record["state"], "outputs": record["outputs"]}))
    return 0 if record["state"] == "succeeded" else 1


def cancel(args: argparse.Namespace) -> int:
    print(_connect(args).job(args.job_id).cancel()["state"])
    return 0


def logs(args: argparse.Namespace) -> int:
    print(_connect(args).job(args.job_id).logs(), end="")
    return 0


def add_job_commands(sub) -> dict:
    """Register the job verbs on an argparse subparsers object; returns verb -> handler."""
    handlers = {}

    def verb(name, handler, help_text, overrides=False, job_id=False, remote=True):
        parser = sub.add_parser(name, help=help_text)
        if overrides:
            parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. height=512 steps=20")
        if job_id:
            parser.add_argument("job_id")
        if remote:
            parser.add_argument(
                "--url",
                default=os.environ.get("TESSERA_URL"),
                help="the HTTP API of `tessera serve` (e.g. http://farm:8000; env TESSERA_URL): no Ray needed",
            )
            parser.add_argument(
                "--api-token",
                default=os.environ.get("TESSERA_TOKEN"),
                help="bearer token for --url (`tessera token create`; env TESSERA_TOKEN)",
            )
            parser.add_argument("--address", default="auto", help="Ray cluster where `tessera serve` runs")
            parser.add_argument(
                "--state-dir",
                default=DEFAULT_STATE_DIR,
                help="the served store's folder: --address auto joins the cluster its serve recorded there",
            )
        handlers[name] = handler
        return parser

    render_parser = verb(
        "render", render, "render one image (job=video: a video): submit and wait (Hydra overrides)", True, remote=False
    )
    render_parser.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    render_parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="job store and logs")
    serve_parser = verb(
        "serve", serve, "run the controller (pool.* overrides) until interrupted", True, remote=False
    )
    serve_parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="job store and logs")
    submit_parser = verb("submit", submit, "queue a render job (job=video: a video) and print its id", True)
    submit_parser.add_argument("--priority", type=int, default=0)
    submit_parser.add_argument(
        "--token", default=None, help="idempotency token: a repeat returns the same job"
    )
    verb("status", status, "a job's record", job_id=True)
    list_parser = verb("list", list_jobs, "jobs in the store")
    list_parser.add_argument("--state", default=None)
    wait_parser = verb("wait", wait, "wait for a job, with a progress bar", job_id=True)
    wait_parser.add_argument("--timeout", type=float, default=None)
    verb("cancel", cancel, "cancel a queued or running job", job_id=True)
    verb("logs", logs, "a job's log", job_id=True)
    return handlers
