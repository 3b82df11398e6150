"""The two kinds of job the service runs, told apart by the spec's "job" field: "image" (the default,
a RenderSpec) or "video" (a VideoSpec, layer-and-frame pipelining). Stored specs carry the field
only for videos, so image jobs stored before videos existed read back unchanged."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from cluster.progress import progress_total as progress_total  # re-exported
from cluster.spec import RenderSpec, SpecError
from cluster.video_spec import VideoSpec

JOB_KINDS = ("image", "video")

JobSpec = RenderSpec | VideoSpec


def spec_data(spec: JobSpec | dict[str, Any]) -> dict[str, Any]:
    """A spec object or mapping as plain data; a VideoSpec object is marked job=video."""
    if isinstance(spec, VideoSpec):
        return stored_spec(spec)
    if is_dataclass(spec) and not isinstance(spec, type):
        return asdict(spec)
    if not isinstance(spec, dict):
        raise SpecError("spec", f"expected a mapping of fields or a spec, got {type(spec).__name__}")
    return dict(spec)


def job_kind(data: dict[str, Any]) -> str:
    kind = data.get("job", "image")
    if kind not in JOB_KINDS:
        raise SpecError("job", f"unknown job kind {kind!r}; expected one of {JOB_KINDS}")
    return kind


def parse_job(data: dict[str, Any]) -> JobSpec:
    """Validate a job's plain data into its spec; SpecError names the bad field."""
    if not isinstance(data, dict):
        raise SpecError("spec", f"expected a mapping of fields, got {type(data).__name__}")
    if job_kind(data) == "video":
        return VideoSpec.from_dict({k: v for k, v in data.items() if k != "job"})
    return RenderSpec.from_dict({k: v for k, v in data.items() if k != "job"})


def stored_spec(spec: JobSpec) -> dict[str, Any]:
    """What the store keeps: the validated fields (a video's rounding notes are not input)."""
    data = spec.to_dict()
    if isinstance(spec, VideoSpec):
        data.pop("notes", None)
        data["job"] = "video"
    return data


def is_video(spec: JobSpec | dict[str, Any]) -> bool:
    return isinstance(spec, VideoSpec) or (isinstance(spec, dict) and spec.get("job") == "video")
