"""The Python client over HTTP: ``Client(url="http://farm:8000", token="tsr_...")`` returns an HttpClient with
the Ray client's methods (submit, job, jobs; a job's status, wait, result, cancel, logs). It needs neither Ray
nor the farm's file system: ``HttpJob.download(path)`` fetches the result. Refusals are raised as the Ray
client raises them: SpecError naming the field, KeyError for an unknown job, PermissionError for a refused
token, TenantLimit (a SpecError) for a tenant's limit."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from cluster.errors import SpecError, TenantLimit
from cluster.store import FINAL_STATES


class HttpJob:
    def __init__(self, client: HttpClient, view: dict) -> None:
        self.client = client
        self.id = view["id"]
        self._view = view

    def status(self) -> dict:
        self._view = self.client._call("GET", f"/v1/jobs/{self.id}")
        return self._view

    def wait(self, progress: bool = False, timeout_s: float | None = None, poll_s: float = 0.2) -> dict:
        """Block until the job ends (`progress`: a tqdm bar of its steps); the final record."""
        from tqdm import tqdm

        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        total, unit = self._view["progress"]["total"], self._view["progress"]["unit"]
        with tqdm(total=total, desc=f"denoising {self.id}", unit=unit, disable=not progress) as bar:
            while True:
                view = self.status()
                bar.update(view["progress"]["done"] - bar.n)
                if view["state"] in FINAL_STATES:
                    return view
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {view['state']} after {timeout_s} s")
                time.sleep(poll_s)

    def result(self) -> dict:
        """The job's outputs once it succeeded (paths on the farm; `download` fetches the file)."""
        from cluster.client import JobFailed

        view = self.wait()
        if view["state"] != "succeeded":
            raise JobFailed(view)
        return view["outputs"]

    def download(self, path: str | Path) -> Path:
        """Write the job's result (its PNG or MP4) to ``path``."""
        self.result()
        Path(path).write_bytes(self.client._call("GET", f"/v1/jobs/{self.id}/result", raw=True))
        return Path(path)

    def cancel(self) -> dict:
        self._view = self.client._call("POST", f"/v1/jobs/{self.id}/cancel")
        return self._view

    def logs(self) -> str:
        return self.client._call("GET", f"/v1/jobs/{self.id}/logs", raw=True).decode()


class HttpClient:
    def __init__(self, url: str, token: str | None = None, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None, headers: dict | None = None, raw: bool = False):
        request = urllib.request.Request(self.url + path, method=method, headers=dict(headers or {}))
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data, timeout=self.timeout_s) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            raise _refusal(err) from None
        except urllib.error.URLError as err:  # nothing answers there
            raise ConnectionError(f"no Tessera API answers at {self.url}: {err.reason}") from None
        return payload if raw else json.loads(payload)

    def submit(self, spec: Any, priority: int = 0, client_token: str | None = None) -> HttpJob:
        """Queue a job (a spec object or its fields as a mapping); `client_token` is the Idempotency-Key."""
        from cluster.jobs import spec_data

        headers = {"Idempotency-Key": client_token} if client_token is not None else None
        view = self._call("POST", "/v1/jobs", {"spec": spec_data(spec), "priority": priority}, headers)
        return HttpJob(self, view)

    def job(self, job_id: str) -> HttpJob:
        return HttpJob(self, self._call("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}"))

    def jobs(self, state: str | None = None, kind: str | None = None) -> list[dict]:
        """Every job of this token's tenant (all pages)."""
        found: list[dict] = []
        offset: int | None = 0
        while offset is not None:
            query = {k: v for k, v in (("state", state), ("kind", kind), ("offset", offset), ("limit", 1000)) if v is not None}
            page = self._call("GET", "/v1/jobs?" + urllib.parse.urlencode(query))
            found += page["data"]
            offset = page["next_offset"]
        return found

    def close(self, stop_controller: bool = True) -> None:
        """Nothing to release: the farm's controller is not this client's."""

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _refusal(err: urllib.error.HTTPError) -> Exception:
    try:
        error = json.loads(err.read())["error"]
        field, message = error["field"], error["message"].removeprefix(f"{error['field']}: ")
    except (ValueError, KeyError, TypeError):
        return ConnectionError(f"HTTP {err.code}: {err.reason}")
    if err.code == 404:
        return KeyError(f"{field}: {message}")
    if err.code in (403, 429) and error.get("type") in ("permission_error", "rate_limit_error"):
        return TenantLimit(field, message, err.code)
    if err.code in (401, 403):
        return PermissionError(f"{field}: {message}")
    if 400 <= err.code < 500:
        return SpecError(field, message)
    return ConnectionError(f"HTTP {err.code}: {message}")
