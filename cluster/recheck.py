"""Shadow re-checks of cached jobs: a fraction of them is rendered again in full, in idle worker time, and the PSNR
of the cached result against the full one goes into the cached job's metadata.json.

A step cache's quality is known only for the job that calibrated it (``cache.min_psnr``); later jobs of the same
key reuse the setting on other prompts and seeds. So the service picks ``ControllerConfig.cache_recheck`` of the
cached image jobs (by a hash of the job id: the same jobs whichever controller sees them), keeps each picked job's
final latent in its state folder, and queues a shadow: the same spec with ``cache.mode=none``, at the lowest
priority, so it runs only while no other job wants the workers and is paused (at a step) as soon as one does. The
shadow's client token names the job it checks (``RECHECK_TOKEN``; users cannot submit such tokens). When the shadow
is done, the PSNR of the two final latents (``parallel.cache.calibrate.group_psnr``, the measure calibration uses)
is written into both jobs' metadata.json and logs; a job whose kept calibration missed its own budget there drops
that calibration, so the next job of its key calibrates again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.admission import MAX_PRIORITY
from cluster.calibrations import CalibrationStore
from cluster.job_files import JobFiles
from cluster.store import JobRecord

if TYPE_CHECKING:
    import torch

RECHECK_TOKEN = "tessera-recheck:"
"""Client-token prefix of shadow jobs: followed by the id of the job they check."""
RECHECK_PRIORITY = -MAX_PRIORITY
"""Shadows run only when nothing else is queued."""
LATENT_FILE = "recheck_latent.pt"
"""Where a picked job's final latent waits for its shadow (in the job's state folder)."""


def picked(job_id: str, fraction: float) -> bool:
    """Whether ``job_id`` is among the ``fraction`` of jobs re-checked: a pure function of the id."""
    if fraction <= 0:
        return False
    digest = int.from_bytes(hashlib.sha256(job_id.encode()).digest()[:8], "big")
    return digest / 2**64 < fraction


def checked_job(record: JobRecord) -> str | None:
    """The id of the job ``record`` re-checks (None: not a shadow)."""
    token = record.client_token or ""
    return token[len(RECHECK_TOKEN) :] if token.startswith(RECHECK_TOKEN) else None


def _update_metadata(directory: Path, update: Callable[[dict], None]) -> None:
    path = directory / "metadata.json"
    metadata = json.loads(path.read_text())
    update(metadata)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(metadata, indent=2))
    os.replace(temporary, path)


class Rechecks:
    """What the segment runner does after publishing an image job (see the module)."""

    def __init__(
        self,
        fraction: float,
        files: JobFiles,
        calibrations: CalibrationStore,
        submit: Callable[[dict, int, str], Any],
    ) -> None:
        """``submit(spec, priority, client_token)`` queues a job (the controller's own path, past the check that
        keeps users from submitting shadow tokens)."""
        self.fraction = fraction
        self.files = files
        self.calibrations = calibrations
        self.submit = submit

    def after_publish(self, job: JobRecord, spec: Any, placed: Any, latents: torch.Tensor | None, directory: Path) -> None:
        checked = checked_job(job)
        if checked is not None:
            self._measure(job, checked, latents, directory)
        elif self._wanted(job, spec, latents):
            self._queue_shadow(job, spec, placed, latents, directory)

    def _wanted(self, job: JobRecord, spec: Any, latents: torch.Tensor | None) -> bool:
        cache = getattr(spec, "cache", None)
        return latents is not None and cache is not None and cache.enabled and picked(job.id, self.fraction)

    def _queue_shadow(self, job: JobRecord, spec: Any, placed: Any, latents: torch.Tensor, directory: Path) -> None:
        key = spec.calibration_key(placed) if hasattr(spec, "calibration_key") else None
        payload = {
            "latents": latents.detach().cpu(),
            "calibration_key": key,
            "min_psnr": spec.cache.min_psnr,
            "directory": str(directory),
        }
        import torch

        self.files.job_dir(job.id).mkdir(parents=True, exist_ok=True)
        torch.save(payload, self.files.job_dir(job.id) / LATENT_FILE)
        shadow = {**spec.stored(), "cache": {"mode": "none"}}
        record = self.submit(shadow, RECHECK_PRIORITY, RECHECK_TOKEN + job.id)
        self.files.log(job.id, f"picked for a shadow re-check at full compute: job {record['id']}")

    def _measure(self, job: JobRecord, checked: str, latents: torch.Tensor | None, directory: Path) -> None:
        saved = self.files.job_dir(checked) / LATENT_FILE
        if latents is None or not saved.is_file():
            self.files.log(job.id, f"re-check of {checked}: its cached result is gone; nothing measured")
            return
        import torch

        from parallel.cache.calibrate import group_psnr

        payload = torch.load(saved, weights_only=True)
        quality = group_psnr(payload["latents"], latents.detach().cpu())
        budget = payload.get("min_psnr")
        record = {
            "job": job.id,
            "psnr_db": None if math.isinf(quality) else round(quality, 2),
            "against": "the final latent at full compute (cache.mode=none)",
            "min_psnr": budget,
            "within_budget": None if budget is None else quality >= budget,
        }
        original = Path(payload["directory"])
        if (original / "metadata.json").is_file():
            _update_metadata(original, lambda metadata: metadata.setdefault("cache", {}).__setitem__("recheck", record))
        _update_metadata(directory, lambda metadata: metadata.__setitem__("recheck_of", {**record, "job": checked}))
        shown = "equal" if math.isinf(quality) else f"{quality:.1f} dB"
        self.files.log(checked, f"shadow re-check {job.id}: {shown} against full compute")
        self.files.log(job.id, f"re-check of {checked}: {shown}")
        if budget is not None and quality < budget and payload.get("calibration_key"):
            self.calibrations.drop(payload["calibration_key"])
            self.files.log(checked, f"its cache calibration missed {budget} dB here: dropped, the next job calibrates again")
        saved.unlink(missing_ok=True)
