"""The web dashboard in a real headless Chromium (the distribution's ``chromium`` and ``chromedriver``, driven by
Selenium) against a real Ray Serve application and a real controller with a one-worker pool, one of each for the
module: a bearer token typed once; a job submitted from the form, its progress moving, its latent's previews
appearing and its result shown (the bytes the page holds equal the file); a job queued behind a long one
re-prioritised (within the tenant's ceiling, refused above it naming ``priority``) and cancelled from its page;
the queue and the pools showing who runs where; a screenshot of the dashboard (``TESSERA_DASHBOARD_PNG``
names where to keep it, e.g. docs/dashboard.png)."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest
import ray

from cluster.client import Client
from cluster.http.app import start, stop
from cluster.http.settings import HttpSettings
from cluster.tenants import TokenStore
from runtime.pool import PoolConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no chromium/chromedriver binary on PATH (apt-get install chromium chromium-driver; .ci/run does)",
)
LONG = {"prompt": "long", "height": 64, "width": 64, "steps": 400, "seed": 3, "parallel": {"strategy": "none"}}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def farm(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard")
    client = Client(state_dir=root / "state", pool=PoolConfig(workers=1, device="cpu"), checkpoint_every=2)
    tokens = TokenStore(root / "state" / "jobs.sqlite")
    token, other = tokens.create("studio-a", max_priority=5)[1], tokens.create("studio-b")[1]
    url = start(HttpSettings(port=_free_port(), output_root=str(root / "outputs")))
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    theirs = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {other}"}, timeout=60)
    yield {"client": client, "url": url, "token": token, "http": http, "other": theirs}
    http.close()
    theirs.close()
    stop()
    ray.get(client.controller.stop.remote())
    ray.kill(client.controller)


@pytest.fixture(scope="module")
def browser(farm):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(30)
    driver.get(farm["url"] + "/")
    yield driver
    driver.quit()


def _until(driver, condition, timeout_s: float = 60.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(lambda d: condition(d), message=what)


def _text(driver, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text


def _click(driver, selector: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, selector).click()


def _type(driver, selector: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.clear()
    field.send_keys(text)


def test_a_token_once_then_a_job_from_the_form_its_progress_preview_and_result(farm, browser):
    _until(browser, lambda d: "bearer token is required" in _text(d, "#message"), 30, "the page asks for a token")
    _type(browser, "#token-input", farm["token"])
    _click(browser, "#token-save")
    assert browser.execute_script("return sessionStorage.getItem('tessera-token')") == farm["token"]
    _until(browser, lambda d: _text(d, "#token-state") == "token set" and _text(d, "#queue-empty"), 30)
    for name, value in (("prompt", "red stripes"), ("width", "64"), ("height", "64"), ("steps", "12"), ("seed", "7")):
        _type(browser, f"#submit-form [name={name}]", value)
    _type(browser, "#submit-form [name=priority]", "2")
    _click(browser, "#submit-button")
    _until(browser, lambda d: d.current_url.split("#job/")[-1] != d.current_url, 30, "the job's page opens")
    job_id = browser.current_url.split("#job/")[1]
    browser.execute_script(  # every progress text the page shows, in order
        "window.seen = []; new MutationObserver(() => seen.push(document.querySelector('#job-progress-text')"
        ".textContent)).observe(document.querySelector('#job-progress-text'), {childList: true});"
    )
    _until(browser, lambda d: _text(d, "#job-state") == "succeeded", 120, "the job succeeds")
    seen = browser.execute_script("return seen")
    done = sorted({int(text.split("/")[0]) for text in seen if text})
    assert done[-1] == 12 and any(0 < d < 12 for d in done), seen  # the bar moved through the steps
    assert _text(browser, "#job-progress-text") == "12/12 steps" and _text(browser, "#job-priority") == "2"
    preview = browser.execute_script("const p = document.querySelector('#preview'); return [p.src, p.dataset.unit, p.naturalWidth]")
    assert preview[0].startswith("data:image/png;base64,") and int(preview[1]) >= 2 and preview[2] == 64 // 8, preview
    _until(browser, lambda d: d.execute_script("const i = document.querySelector('#result img'); return i && i.naturalWidth"), 30)
    assert browser.execute_script("return document.querySelector('#result img').naturalWidth") == 64
    shown = browser.execute_async_script(  # the bytes behind the page's image
        "const done = arguments[arguments.length - 1];"
        "fetch(document.querySelector('#result img').src).then(r => r.blob()).then(b => {"
        "const f = new FileReader(); f.onload = () => done(f.result.split(',')[1]); f.readAsDataURL(b); });"
    )
    record = farm["client"].job(job_id).status()
    assert record["spec"]["prompt"] == "red stripes" and record["spec"]["seed"] == 7 and record["priority"] == 2
    assert base64.b64decode(shown) == Path(record["outputs"]["image"]).read_bytes()
    _until(browser, lambda d: "succeeded" in _text(d, "#job-log"), 10, "the log shows the end")
    assert "submitted with priority 2" in _text(browser, "#job-log")


def test_a_queued_job_reprioritised_and_cancelled_from_its_page(farm, browser, tmp_path):
    http = farm["http"]
    long_job = http.post("/v1/jobs", json={"spec": LONG, "priority": 1}).json()
    queued = http.post("/v1/jobs", json={"spec": {**LONG, "prompt": "behind", "steps": 2}, "priority": 0}).json()
    browser.get(farm["url"] + "/#")
    row = f"#queue tr[data-job='{long_job['id']}']"
    _until(browser, lambda d: _text(d, f"{row} .state") == "running" and _text(d, f"{row} .workers"), 60, "the long job runs")
    assert _text(browser, f"{row} .workers").startswith("default:0@")  # its worker, from /v1/pools
    assert _text(browser, "#pools tr[data-worker='0'] .job") == long_job["id"]
    assert _text(browser, f"#queue tr[data-job='{queued['id']}'] .state") == "queued"
    shot = Path(os.environ.get("TESSERA_DASHBOARD_PNG") or tmp_path / "dashboard.png")
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    browser.get(f"{farm['url']}/#job/{queued['id']}")
    _until(browser, lambda d: _text(d, "#job-state") == "queued", 30)
    _type(browser, "#priority-input", "9")  # above studio-a's ceiling of 5
    _click(browser, "#priority-button")
    _until(browser, lambda d: _text(d, "#message").startswith("priority: "), 30, "refused naming priority")
    assert "ceiling" in _text(browser, "#message") and farm["client"].job(queued["id"]).status()["priority"] == 0
    _type(browser, "#priority-input", "-1")
    _click(browser, "#priority-button")
    _until(browser, lambda d: _text(d, "#job-priority") == "-1", 30)
    assert farm["client"].job(queued["id"]).status()["priority"] == -1
    _click(browser, "#cancel-button")
    _until(browser, lambda d: _text(d, "#job-state") == "cancelled", 30, "the queued job is cancelled")
    assert browser.find_element("css selector", "#cancel-button").get_attribute("disabled")
    assert farm["client"].job(queued["id"]).status()["state"] == "cancelled"
    _until(browser, lambda d: "cancelled" in _text(d, "#job-log"), 10)
    assert http.get(f"/v1/jobs/{long_job['id']}").json()["state"] == "running"  # the other job untouched
    other = farm["other"]  # another tenant sees the worker busy, not whose job holds it, and cannot re-prioritise it
    assert [w["job"] for w in other.get("/v1/pools").json()["data"][0]["workers"]] == ["busy"]
    assert other.post(f"/v1/jobs/{long_job['id']}/priority", json={"priority": 3}).status_code == 404
    http.post(f"/v1/jobs/{long_job['id']}/cancel")
    assert farm["client"].job(long_job["id"]).wait(timeout_s=60)["state"] == "cancelled"


def test_the_priority_route_refuses_bad_input_naming_the_field(farm):
    http = farm["http"]
    # a long job, so it is still queued or running while the bad bodies arrive (a 1-step job could end among them,
    # and an ended job answers 409 before its body is looked at); cancelled at the end for the ended-job check
    job = http.post("/v1/jobs", json={"spec": LONG, "priority": 0}).json()
    for body, status, field in (
        ({"priority": "high"}, 422, "priority"),
        ({"priority": 2.5}, 422, "priority"),
        ({"priority": 6}, 403, "priority"),
        ({}, 422, "priority"),
        ({"priority": 1, "why": "x"}, 422, "why"),
    ):
        reply = http.post(f"/v1/jobs/{job['id']}/priority", json=body)
        assert reply.status_code == status and reply.json()["error"]["field"] == field, (body, reply.text)
    assert http.post("/v1/jobs/nope/priority", json={"priority": 1}).status_code == 404
    http.post(f"/v1/jobs/{job['id']}/cancel")
    assert farm["client"].job(job["id"]).wait(timeout_s=60)["state"] == "cancelled"
    ended = http.post(f"/v1/jobs/{job['id']}/priority", json={"priority": 1})
    assert ended.status_code == 409 and ended.json()["error"]["field"] == "state"
    assert farm["client"].job(job["id"]).status()["priority"] == 0


def test_lowering_a_running_jobs_priority_lets_a_queued_one_pause_it(farm):
    """The controller's running job takes its new priority too: once below the queued job's, it is paused for it."""
    http = farm["http"]
    running = http.post("/v1/jobs", json={"spec": LONG, "priority": 3}).json()
    client = farm["client"]
    deadline = time.monotonic() + 60
    while client.job(running["id"]).status()["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    waiting = http.post("/v1/jobs", json={"spec": {**LONG, "prompt": "urgent", "steps": 2}, "priority": 1}).json()
    time.sleep(1.0)  # a few scheduler rounds: priority 1 does not pause priority 3
    assert client.job(waiting["id"]).status()["state"] == "queued"
    assert http.post(f"/v1/jobs/{running['id']}/priority", json={"priority": 0}).json()["priority"] == 0
    assert client.job(waiting["id"]).wait(timeout_s=60)["state"] == "succeeded"
    assert "pausing for " + waiting["id"] in client.job(running["id"]).logs()
    http.post(f"/v1/jobs/{running['id']}/cancel")
    assert client.job(running["id"]).wait(timeout_s=60)["state"] == "cancelled"
