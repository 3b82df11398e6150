"""Shadow re-checks (``ControllerConfig.cache_recheck``): a picked cached job is rendered again at full compute at
the lowest priority, and the PSNR of its result against that one lands in its metadata.json; a calibration that
missed its budget there is dropped."""

from __future__ import annotations

import pytest
import ray
import torch
from _job_outputs import job_metadata
from _tiny_flux import save_tiny_flux

from cluster.calibrations import CalibrationStore
from cluster.client import Client
from cluster.errors import SpecError
from cluster.job_files import JobFiles
from cluster.recheck import LATENT_FILE, RECHECK_PRIORITY, RECHECK_TOKEN, Rechecks, picked
from cluster.store import JobStore
from runtime.pool import PoolConfig


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-recheck") / "tiny-flux")


def test_picking_is_a_pure_function_of_the_job_id():
    ids = [f"job-{i}" for i in range(2000)]
    assert [picked(i, 0.25) for i in ids] == [picked(i, 0.25) for i in ids]
    assert 0.2 < sum(picked(i, 0.25) for i in ids) / len(ids) < 0.3
    assert not any(picked(i, 0.0) for i in ids) and all(picked(i, 1.0) for i in ids)


def test_a_cached_job_gets_a_shadow_and_its_psnr(ray_local, flux_dir, tmp_path):
    client = Client(state_dir=tmp_path / "state", pool=PoolConfig(workers=1, device="cpu"), cache_recheck=1.0)
    try:
        spec = {
            "model": str(flux_dir),
            "height": 64,
            "width": 48,
            "steps": 10,
            "seed": 3,
            "output_dir": str(tmp_path / "out"),
            "parallel": {"strategy": "none"},
            "cache": {"mode": "taylorseer", "min_psnr": 45.0},
        }
        with pytest.raises(SpecError) as refused:
            client.submit(spec, client_token=RECHECK_TOKEN + "someone-else")
        assert refused.value.field == "client_token"
        cached = client.submit(spec).wait(timeout_s=300)
        assert cached["state"] == "succeeded"
        shadows = [j for j in client.jobs() if j["client_token"] == RECHECK_TOKEN + cached["id"]]
        assert len(shadows) == 1 and shadows[0]["priority"] == RECHECK_PRIORITY
        assert shadows[0]["spec"]["cache"]["mode"] == "none"
        shadow = client.job(shadows[0]["id"]).wait(timeout_s=300)
        assert shadow["state"] == "succeeded"
        record = job_metadata(cached)["cache"]
        # the shadow renders what the calibration took as its reference (same seed): the same PSNR
        assert record["recheck"]["job"] == shadow["id"] and record["recheck"]["within_budget"] is True
        assert record["recheck"]["psnr_db"] == pytest.approx(record["calibration"]["psnr"], abs=0.01)
        assert job_metadata(shadow)["recheck_of"]["job"] == cached["id"]
        assert "shadow re-check" in client.job(cached["id"]).logs()
        assert not (tmp_path / "state" / "jobs" / cached["id"] / LATENT_FILE).exists()
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)


def test_a_calibration_below_its_budget_in_a_recheck_is_dropped(tmp_path):
    """The measurement itself, on a real store: a shadow whose result differs beyond the budget drops the key."""
    files = JobFiles(tmp_path / "state")
    store = JobStore(files.store_path)
    calibrations = CalibrationStore(store.path)
    calibrations.put("key", {"knob": "interval", "value": 3}, "cached-job")
    files.job_dir("cached-job").mkdir(parents=True)
    out = tmp_path / "out" / "cached-job"
    out.mkdir(parents=True)
    (out / "metadata.json").write_text("{}")
    shadow_out = tmp_path / "out" / "shadow"
    shadow_out.mkdir(parents=True)
    (shadow_out / "metadata.json").write_text("{}")
    reference = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    payload = {"latents": reference + 0.5, "calibration_key": "key", "min_psnr": 40.0, "directory": str(out)}
    torch.save(payload, files.job_dir("cached-job") / LATENT_FILE)
    record, _ = store.submit({"model": "x"}, RECHECK_PRIORITY, RECHECK_TOKEN + "cached-job")
    Rechecks(1.0, files, calibrations, submit=None).after_publish(record, None, None, reference, shadow_out)
    assert calibrations.get("key") is None
    assert "dropped" in files.read_log("cached-job")
