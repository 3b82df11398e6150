"""Job kinds: one module each (its spec, how its segments are placed and its outputs written), one line
each in ``JOB_KINDS``.

A stored spec names its kind in its "job" field ("image" when absent, so image jobs stored before job
kinds existed read back unchanged). This module stays light (no torch, no diffusers): the CLI's job
verbs and the client read progress through it; a kind's spec module is imported when a spec is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

from cluster.errors import SpecError
from cluster.suggest import closest, shown
from parallel.frames.schedule import ticks

if TYPE_CHECKING:
    from cluster.jobs.spec import JobSpec


@dataclass(frozen=True)
class JobKind:
    name: str
    """The value of a spec's "job" field."""
    unit: str
    """What its progress counts ("step", "tick")."""
    spec: str
    """``module:Class`` of its spec, imported on first use."""
    total: Callable[[dict], int]
    """The units a stored spec (plain data) goes up to."""

    def spec_class(self) -> type[JobSpec]:
        module, name = self.spec.split(":")
        return getattr(importlib.import_module(module), name)


JOB_KINDS: dict[str, JobKind] = {
    "image": JobKind("image", "step", "cluster.jobs.image:RenderSpec", lambda d: d["steps"]),
    "video": JobKind(
        "video",
        "tick",
        "cluster.jobs.video:VideoSpec",
        lambda d: ticks(d["frames"] // d["block_frames"], d["steps"], d.get("block_stride", 1)),
    ),
}


def kind_of(data: dict[str, Any]) -> JobKind:
    """The kind of a job's plain data (its "job" field, "image" when absent)."""
    name = data.get("job", "image")
    if not isinstance(name, str) or name not in JOB_KINDS:
        match = closest(name, JOB_KINDS) if isinstance(name, str) else None
        hint = f"; did you mean {match}?" if match else ""
        raise SpecError("job", f"unknown job kind {shown(name)}; expected one of {tuple(JOB_KINDS)}{hint}")
    return JOB_KINDS[name]


def parse_job(data: dict[str, Any]) -> JobSpec:
    """Validate a job's plain data into its kind's spec; SpecError names the bad field."""
    if not isinstance(data, dict):
        raise SpecError("spec", f"expected a mapping of fields, got {type(data).__name__}")
    return kind_of(data).spec_class().from_dict({k: v for k, v in data.items() if k != "job"})


def spec_data(spec: JobSpec | dict[str, Any]) -> dict[str, Any]:
    """A spec object or mapping as plain data; a spec object of another kind than image is marked with it."""
    if is_dataclass(spec) and not isinstance(spec, type):
        stored = getattr(spec, "stored", None)
        return stored() if stored is not None else asdict(spec)
    if not isinstance(spec, dict):
        raise SpecError("spec", f"expected a mapping of fields or a spec, got {type(spec).__name__}")
    return dict(spec)


def progress_total(data: dict[str, Any]) -> int:
    """The unit count a stored job's steps_done goes up to (denoising steps, a video's queue ticks)."""
    return kind_of(data).total(data)


def progress_unit(data: dict[str, Any]) -> str:
    return kind_of(data).unit
