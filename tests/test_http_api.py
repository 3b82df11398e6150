"""The HTTP API through real HTTP (httpx) against a real Ray Serve application and a real controller, one of
each for the module: a job submitted, followed by its server-sent events until done, its result's bytes (and a
range of them) equal to the file, previews of its latent among its events; the OpenAI images and videos routes; idempotent resubmission; cancel; tenants isolated
from each other; a revoked token refused; malformed requests answered 4xx naming the field, the store
unchanged; the service's metrics at Ray's metrics endpoint; a multi-block video paused by a more urgent job plays
through its HLS playlist in the real ffprobe before it ends, and whole once done."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
import ray
from _hls import HOLDER, VIDEO, ffprobe, needs_ffprobe, playlist_entries, wait_for
from _malformed_specs import IMAGE, MALFORMED, REUSED_TOKEN, representative
from PIL import Image

from cluster.client import Client
from cluster.http.app import start, stop
from cluster.http.settings import HttpSettings
from cluster.tenants import TokenStore
from runtime.pool import PoolConfig


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def farm(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=2, device="cpu"), checkpoint_every=2)
    tokens = TokenStore(root / "state" / "jobs.sqlite")
    revoked_id, revoked = tokens.create("studio-c")
    tokens.revoke(revoked_id)
    farm = {
        "client": client,
        "a": tokens.create("studio-a", max_priority=5)[1],
        "b": tokens.create("studio-b")[1],
        "revoked": revoked,
        "outputs": root / "outputs",
    }
    url = start(HttpSettings(port=_free_port(), output_root=str(root / "outputs")))
    farm["url"] = url
    farm["http"] = {name: _session(url, farm[name]) for name in ("a", "b")}
    yield farm
    for session in farm["http"].values():
        session.close()
    stop()
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


def _session(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120)


def _events(http: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    """Every server-sent event of the job, until the stream ends (after "done")."""
    events, name = [], None
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    return events


def test_a_job_through_http_its_events_and_its_result(farm):
    a = farm["http"]["a"]
    created = a.post("/v1/jobs", json={"spec": {**IMAGE, "steps": 3}, "priority": 2}, headers={"Idempotency-Key": REUSED_TOKEN})
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["tenant"] == "studio-a" and job["priority"] == 2 and job["idempotency_key"] == REUSED_TOKEN
    events = _events(a, job["id"])
    states = [data["state"] for name, data in events if name == "state"]
    steps = [data["done"] for name, data in events if name == "progress"]
    assert states[-1] == "succeeded" and "running" in states, events
    assert steps == sorted(steps) and steps[-1] == 3, events
    assert events[-1][0] == "done" and events[-1][1]["state"] == "succeeded"
    previews = [data for name, data in events if name == "preview"]  # one per checkpoint (every 2 steps here)
    assert previews and previews[-1]["unit"] == 2, [name for name, _ in events]
    png = base64.b64decode(previews[-1]["image"].removeprefix("data:image/png;base64,"))
    with Image.open(io.BytesIO(png)) as shown:  # the latent's size: no VAE decode
        assert shown.size == (IMAGE["width"] // 8, IMAGE["height"] // 8) and shown.mode == "RGB"
    record = farm["client"].job(job["id"]).status()
    image = Path(record["outputs"]["image"])
    assert image.parent.parent == farm["outputs"]  # the spec's output_dir is the service's output root
    result = a.get(f"/v1/jobs/{job['id']}/result")
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert result.content == image.read_bytes()
    part = a.get(f"/v1/jobs/{job['id']}/result", headers={"Range": "bytes=8-99"})
    assert part.status_code == 206 and part.content == image.read_bytes()[8:100]
    assert "submitted with priority 2" in a.get(f"/v1/jobs/{job['id']}/logs").text
    listed = a.get("/v1/jobs", params={"state": "succeeded", "kind": "image"}).json()
    assert [j["id"] for j in listed["data"]] == [job["id"]] and listed["total"] == 1


def test_the_openai_images_route_returns_the_jobs_png(farm):
    reply = farm["http"]["a"].post(
        "/v1/images/generations",
        json={"prompt": "red stripes", "size": "64x64", "n": 1, "response_format": "b64_json", "num_inference_steps": 2},
    )
    assert reply.status_code == 200, reply.text
    png = base64.b64decode(reply.json()["data"][0]["b64_json"])
    record = farm["client"].job(reply.json()["id"]).status()
    assert record["spec"]["steps"] == 2 and (record["spec"]["width"], record["spec"]["height"]) == (64, 64)
    assert png == Path(record["outputs"]["image"]).read_bytes()


def test_idempotent_resubmission_and_cancel(farm):
    a, b = farm["http"]["a"], farm["http"]["b"]
    long_job = {"spec": {**IMAGE, "steps": 400}, "priority": -5}
    first = a.post("/v1/jobs", json=long_job, headers={"Idempotency-Key": "shot-7"}).json()
    again = a.post("/v1/jobs", json=long_job, headers={"Idempotency-Key": "shot-7"}).json()
    assert again["id"] == first["id"]
    assert len(farm["client"].jobs()) == len({r["id"] for r in farm["client"].jobs()})
    theirs = b.post("/v1/jobs", json=long_job, headers={"Idempotency-Key": "shot-7"}).json()  # b's own key
    assert theirs["id"] != first["id"] and theirs["tenant"] == "studio-b"
    for http, job in ((a, first), (b, theirs)):
        assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        assert _events(http, job["id"])[-1][1]["state"] == "cancelled"


def test_a_tenant_sees_and_cancels_only_its_own_jobs(farm):
    a, b = farm["http"]["a"], farm["http"]["b"]
    mine = a.get("/v1/jobs").json()["data"][0]["id"]
    for method, path in (
        ("GET", f"/v1/jobs/{mine}"),
        ("POST", f"/v1/jobs/{mine}/cancel"),
        ("GET", f"/v1/jobs/{mine}/logs"),
        ("GET", f"/v1/jobs/{mine}/result"),
        ("GET", f"/v1/jobs/{mine}/events"),
    ):
        reply = b.request(method, path)
        assert reply.status_code == 404 and reply.json()["error"]["field"] == "job_id", (path, reply.text)
    assert mine not in {j["id"] for j in b.get("/v1/jobs").json()["data"]}
    assert a.get(f"/v1/jobs/{mine}").json()["state"] == "succeeded"  # b's cancel did nothing


def test_a_revoked_unknown_or_missing_token_is_refused(farm):
    url = str(farm["http"]["a"].base_url)
    for token in (farm["revoked"], "tsr_000000000000_forged", "not-a-token", None):
        with _session(url, token) as http:
            reply = http.get("/v1/jobs")
            assert reply.status_code == 401 and reply.json()["error"]["field"] == "authorization", reply.text
            assert http.post("/v1/jobs", json={"spec": IMAGE}).status_code == 401


def _malformed_requests() -> list[tuple[str, str, dict, str]]:
    """(method, path, request keywords, field) of each malformed request: the shared table's submissions (an
    idempotency key only where a header can carry it) and the API's own fields."""
    requests = []
    for row in representative(MALFORMED):
        token = row.submit.get("client_token")
        if "client_token" in row.submit and not (isinstance(token, str) and token.isprintable() and token == token.strip()):
            continue
        body = json.dumps({"spec": row.spec(), "priority": row.submit.get("priority", 0)})  # NaN as JSON's NaN
        headers = {"Content-Type": "application/json", **({"Idempotency-Key": token} if token is not None else {})}
        requests.append(("POST", "/v1/jobs", {"content": body, "headers": headers}, row.field))
    requests += [
        ("POST", "/v1/jobs", {"content": b"{not json"}, "body"),
        ("POST", "/v1/jobs", {"content": b"[" * 100_000 + b"]" * 100_000}, "body"),  # nested past the parser's depth
        ("POST", "/v1/jobs", {"json": [IMAGE]}, "body"),
        ("POST", "/v1/jobs", {"json": {"priority": 1}}, "spec"),
        ("POST", "/v1/jobs", {"json": {"spec": IMAGE, "prio": 1}}, "prio"),
        ("POST", "/v1/jobs", {"json": {"spec": "64x64"}}, "spec"),
        ("POST", "/v1/jobs", {"json": {"spec": IMAGE, "priority": 6}}, "priority"),  # above studio-a's ceiling
        ("POST", "/v1/images/generations", {"json": {"prompt": "x", "size": "big"}}, "size"),
        ("POST", "/v1/images/generations", {"json": {"prompt": "x", "n": 2}}, "n"),
        ("POST", "/v1/images/generations", {"json": {"prompt": "x", "response_format": "xml"}}, "response_format"),
        ("POST", "/v1/images/generations", {"json": {"size": "64x64"}}, "prompt"),
        ("POST", "/v1/images/generations", {"json": {"prompt": "x", "size": "60x64"}}, "width"),
        ("POST", "/v1/videos", {"json": {"prompt": "x", "seconds": -1}}, "seconds"),
        ("POST", "/v1/videos", {"json": {"prompt": "x", "size": "32x32", "fps": "fast"}}, "fps"),
        ("GET", "/v1/jobs?state=done", {}, "state"),
        ("GET", "/v1/jobs?limit=0", {}, "limit"),
        ("GET", "/v1/jobs?limit=many", {}, "limit"),
    ]
    return requests


def test_malformed_requests_are_refused_naming_the_field_and_store_nothing(farm):
    a = farm["http"]["a"]
    # the job the table's reused key belongs to (the same one an earlier test made; the key makes it one job)
    made = a.post("/v1/jobs", json={"spec": {**IMAGE, "steps": 3}, "priority": 2}, headers={"Idempotency-Key": REUSED_TOKEN})
    assert made.status_code in (200, 201), made.text
    farm["client"].job(made.json()["id"]).wait(timeout_s=120)  # settled: the store is compared below
    before = farm["client"].jobs()
    requests = _malformed_requests()
    assert len(requests) >= 30
    for method, path, keywords, field in requests:
        reply = a.request(method, path, **keywords)
        assert 400 <= reply.status_code < 500, (path, field, reply.status_code, reply.text[:300])
        error = reply.json()["error"]
        assert error["field"] == field and error["message"].startswith(f"{field}: "), (field, error)
    assert farm["client"].jobs() == before


def test_the_python_client_over_http(farm, tmp_path):
    from cluster.errors import SpecError

    url = str(farm["http"]["a"].base_url)
    client, other = Client(url=url, token=farm["a"]), Client(url=url, token=farm["b"])
    banded = {**IMAGE, "seed": 5, "parallel": {"strategy": "patch", "degree": 2}}  # its bytes: the metrics test's
    job = client.submit(banded, priority=1, client_token="shot-py")
    assert client.submit(banded, priority=1, client_token="shot-py").id == job.id
    assert job.wait(timeout_s=120)["state"] == "succeeded"
    assert job.download(tmp_path / "image.png").read_bytes() == Path(job.result()["image"]).read_bytes()
    assert "succeeded" in job.logs() and job.id in {j["id"] for j in client.jobs(state="succeeded")}
    with pytest.raises(SpecError) as refused:
        client.submit({**IMAGE, "heigth": 64})
    assert refused.value.field == "heigth"
    with pytest.raises(KeyError):
        other.job(job.id)
    with pytest.raises(PermissionError):
        Client(url=url, token=farm["revoked"]).jobs()


def test_the_videos_route_in_the_openai_sdks_form(farm):
    a = farm["http"]["a"]
    form = {"prompt": "waves", "size": "32x32", "seconds": "2", "fps": "8", "block_frames": "8", "num_inference_steps": "2"}
    created = a.post("/v1/videos", files={k: (None, v) for k, v in form.items()}, data={"priority": "-9"})
    assert created.status_code == 200, created.text
    video = created.json()
    assert video["object"] == "video" and video["status"] in ("queued", "in_progress") and video["size"] == "32x32"
    spec = farm["client"].job(video["id"]).status()["spec"]
    assert (spec["frames"], spec["fps"], spec["steps"], spec["width"]) == (16, 8, 2, 32)
    assert spec["prompt"] == "waves"
    numeric = a.post("/v1/videos", files={k: (None, v) for k, v in {**form, "prompt": "1984"}.items()},
                     data={"priority": "-9"})  # a form's text field stays text, however it reads
    assert numeric.status_code == 200, numeric.text
    assert farm["client"].job(numeric.json()["id"]).status()["spec"]["prompt"] == "1984"
    a.post(f"/v1/jobs/{numeric.json()['id']}/cancel")
    assert a.get(f"/v1/videos/{video['id']}").json()["id"] == video["id"]
    early = a.get(f"/v1/videos/{video['id']}/content")
    a.post(f"/v1/jobs/{video['id']}/cancel")
    assert early.status_code == 409 and early.json()["error"]["field"] == "state"
    image_job = a.get("/v1/jobs", params={"kind": "image"}).json()["data"][0]["id"]
    assert a.get(f"/v1/videos/{image_job}").status_code == 404  # an image job is no video


def test_the_services_metrics_reach_rays_metrics_endpoint(farm):
    """Ray exports ``ray.util.metrics`` every few seconds on each node's metrics port (what Prometheus scrapes).
    The module's jobs ran on both workers (one of them, the Python client's, as two patch bands), so both workers
    were busy and the patch strategy exchanged bytes."""
    succeeded = len(farm["client"].jobs("succeeded"))
    port = ray.nodes()[0]["MetricsExportPort"]
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        lines = text.splitlines()
        jobs = [line for line in lines if line.startswith("ray_tessera_jobs{") and 'state="succeeded"' in line]
        steps = [line for line in lines if line.startswith("ray_tessera_unit_seconds_count{")]
        busy = {_tag(line, "worker") for line in lines if line.startswith("ray_tessera_worker_busy_seconds_total{") and _value(line) > 0}
        patch = [line for line in lines if line.startswith("ray_tessera_bytes_exchanged_total{") and 'strategy="patch"' in line]
        if any(_value(line) == succeeded for line in jobs) and steps and busy == {"0", "1"} and any(_value(x) > 0 for x in patch):
            return
        time.sleep(1)
    raise AssertionError("no tessera metrics at Ray's metrics endpoint:\n" + "\n".join(x for x in text.splitlines() if "tessera" in x))


def _value(line: str) -> float:
    return float(line.rsplit(" ", 1)[1])


def _tag(line: str, name: str) -> str:
    return line.split(f'{name}="', 1)[1].split('"', 1)[0]


@needs_ffprobe
def test_a_paused_video_plays_through_its_playlist_then_plays_whole_when_done(farm):
    a, b = farm["http"]["a"], farm["http"]["b"]
    video = a.post("/v1/jobs", json={"spec": VIDEO}).json()
    playlist_url = f"/v1/jobs/{video['id']}/stream.m3u8"
    first = wait_for("a finished block", lambda: playlist_entries(a.get(playlist_url).text))
    holder = b.post("/v1/jobs", json={"spec": HOLDER, "priority": 10})  # pauses the video for its worker
    assert holder.status_code == 201, holder.text
    holder = holder.json()
    try:
        ended = ("paused", "succeeded", "failed")
        state = wait_for(
            "the video paused", lambda: {a.get(f"/v1/jobs/{video['id']}").json()["state"]} & set(ended)
        )
        assert state == {"paused"}, (
            f"the video is {state} instead of paused: it ended before the pause took effect"
        )
        reply = a.get(playlist_url)
        assert reply.status_code == 200 and reply.headers["content-type"] == "application/vnd.apple.mpegurl"
        text = reply.text
        shown = playlist_entries(text)
        assert len(shown) >= len(first) and len(shown) < 8, text  # paused before its last block
        assert [uri for _, uri in shown] == [f"stream/{i}.ts" for i in range(len(shown))]
        assert all(seconds == 2 / 8 for seconds, _ in shown)
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text
        assert "#EXT-X-TARGETDURATION:1" in text and "#EXT-X-MEDIA-SEQUENCE:0" in text
        probe = ffprobe(farm["url"] + playlist_url, farm["a"])
        assert (probe["codec_name"], probe["width"], probe["height"]) == ("h264", 32, 32)
        assert int(probe["nb_read_frames"]) == 2 * len(shown), probe
        assert a.get(f"/v1/jobs/{video['id']}").json()["state"] == "paused"  # read before the job ended
        served = a.get(f"/v1/jobs/{video['id']}/stream/0.ts")
        assert served.status_code == 200 and served.headers["content-type"] == "video/mp2t"
        # another tenant's job is unknown; a segment not finished is not there; an image job has no stream
        for path in (playlist_url, f"/v1/jobs/{video['id']}/stream/0.ts"):
            refused = b.get(path)
            assert refused.status_code == 404 and refused.json()["error"]["field"] == "job_id", refused.text
        assert httpx.get(farm["url"] + playlist_url).status_code == 401
        missing = a.get(f"/v1/jobs/{video['id']}/stream/{len(shown)}.ts")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "index", missing.text
        image = b.get(f"/v1/jobs/{holder['id']}/stream.m3u8")
        assert image.status_code == 404 and image.json()["error"]["field"] == "kind", image.text
        assert "only a video job has a stream" in image.json()["error"]["message"]
    finally:
        b.post(f"/v1/jobs/{holder['id']}/cancel")
    record = farm["client"].job(video["id"]).wait(timeout_s=120)
    assert record["state"] == "succeeded", farm["client"].job(video["id"]).logs()
    assert "paused" in farm["client"].job(video["id"]).logs()
    text = a.get(playlist_url).text
    assert len(playlist_entries(text)) == 8 and text.rstrip().endswith("#EXT-X-ENDLIST"), text
    probe = ffprobe(farm["url"] + playlist_url, farm["a"])
    assert int(probe["nb_read_frames"]) == 16, probe
    assert (
        a.get(f"/v1/jobs/{video['id']}/stream/0.ts").content == served.content
    )  # cut from video.mp4: the same
    segments = [data for name, data in _events(a, video["id"]) if name == "segment"]
    assert [s["index"] for s in segments] == list(range(8)) and segments[0]["playlist"].endswith(playlist_url)


def test_head_answers_as_get_without_a_body_and_the_router_answers_in_the_error_shape(farm):
    a = farm["http"]["a"]
    created = a.post("/v1/jobs", json={"spec": {**IMAGE, "seed": 21}})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert farm["client"].job(job_id).wait(timeout_s=120)["state"] == "succeeded"
    got, head = a.get(f"/v1/jobs/{job_id}/result"), a.head(f"/v1/jobs/{job_id}/result")  # what curl -I, players ask
    assert head.status_code == 200 and head.content == b"", head.text
    assert head.headers["content-length"] == str(len(got.content)) and head.headers["content-type"] == "image/png"
    missing = a.get("/v1/no-such-route")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "path", missing.text
    wrong = a.delete(f"/v1/jobs/{job_id}/result")
    assert wrong.status_code == 405 and wrong.json()["error"]["field"] == "method", wrong.text
