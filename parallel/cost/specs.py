"""Device and link specs, read from data (specs.yaml beside this file, plus any extra YAML files).

An extra file has the same shape (``devices:`` and/or ``links:`` mappings); its entries are added, and an
entry with an existing name replaces it field by field, so a site can say ``a100-80gb: {efficiency: 0.5}``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import yaml

SPECS_YAML = Path(__file__).with_name("specs.yaml")


@dataclass(frozen=True)
class DeviceSpec:
    """What one worker's device can compute and hold."""

    name: str
    """Key in the specs file."""
    peak_flops: float
    """Dense peak FLOP/s at ``dtype``."""
    efficiency: float
    """Fraction of the peak a diffusion model's forward reaches."""
    memory_bytes: float
    """Memory one worker may use."""
    dtype: str = "float16"
    """Data type the model runs in on this device (sets parameter and activation bytes)."""
    op_overhead_s: float = 0.0
    """Fixed cost per dispatched op (kernel launch or eager dispatch)."""
    corun_efficiency: float = 1.0
    """Throughput while every worker of the host computes at once, relative to alone."""
    async_launch: bool = False
    """Ops are queued ahead of the compute (CUDA streams): dispatch overlaps compute instead of adding."""
    half_efficiency_flops: float = 0.0
    """FLOPs of a kernel that runs at half of ``efficiency``: a kernel of ``f`` FLOPs reaches
    ``efficiency x f / (f + half_efficiency_flops)``, so a worker whose share of the work shrinks (smaller
    matmuls, shorter attention) runs further from the peak. 0: every kernel at ``efficiency``."""
    decode_efficiency: float = 1.0
    """A video VAE decode's throughput relative to ``flops``: wide convolutions, which run nearer the peak than the
    denoiser forward ``flops`` is calibrated on (measured per device; 1: not measured)."""
    description: str = ""
    """Free text: where the figures come from."""

    @property
    def flops(self) -> float:
        """Effective FLOP/s of one worker running alone."""
        return self.peak_flops * self.efficiency


@dataclass(frozen=True)
class LinkSpec:
    """How one worker talks to its peers."""

    name: str
    """Key in the specs file."""
    bandwidth_Bps: float
    """Sustained bytes per second one worker sends, per direction."""
    latency_s: float
    """Latency of one message or one collective step."""
    overlaps_compute: bool = True
    """Whether transfers proceed beside compute (copy engines) or take the compute's cores (gloo on CPU)."""
    description: str = ""
    """Free text: where the figures come from."""

    def seconds(self, nbytes: float, messages: float) -> float:
        """Time to send ``nbytes`` in ``messages`` messages."""
        return nbytes / self.bandwidth_Bps + messages * self.latency_s


@dataclass(frozen=True)
class Specs:
    """All known devices and links by name."""

    devices: dict[str, DeviceSpec]
    """Device specs by name."""
    links: dict[str, LinkSpec]
    """Link specs by name."""

    def device(self, name: str | DeviceSpec) -> DeviceSpec:
        if isinstance(name, DeviceSpec):
            return name
        if name not in self.devices:
            raise KeyError(f"device: unknown device {name!r}; known: {sorted(self.devices)}")
        return self.devices[name]

    def link(self, name: str | LinkSpec) -> LinkSpec:
        if isinstance(name, LinkSpec):
            return name
        if name not in self.links:
            raise KeyError(f"link: unknown link {name!r}; known: {sorted(self.links)}")
        return self.links[name]


def _merge(base: dict[str, dict], extra: dict[str, dict] | None) -> dict[str, dict]:
    out = {k: dict(v) for k, v in base.items()}
    for name, entry in (extra or {}).items():
        out.setdefault(name, {}).update(entry or {})
    return out


def _build(cls: type, name: str, entry: dict) -> object:
    known = {f.name for f in fields(cls)} - {"name"}
    unknown = set(entry) - known
    if unknown:
        raise ValueError(
            f"{cls.__name__} {name!r}: unknown fields {sorted(unknown)}; expected {sorted(known)}"
        )
    # PyYAML reads 1.0e9 (no exponent sign) as a string: coerce numbers by the field's declared type
    types = {f.name: f.type for f in fields(cls)}
    values = {k: float(v) if types[k] == "float" else v for k, v in entry.items()}
    return cls(name=name, **values)


def load_specs(*extra_paths: str | Path) -> Specs:
    """The built-in specs, with each extra YAML file merged on top in order."""
    return _load(tuple(str(p) for p in extra_paths))


@lru_cache(maxsize=8)
def _load(extra_paths: tuple[str, ...]) -> Specs:
    data = yaml.safe_load(SPECS_YAML.read_text())
    devices, links = data["devices"], data["links"]
    for path in extra_paths:
        more = yaml.safe_load(Path(path).read_text()) or {}
        devices = _merge(devices, more.get("devices"))
        links = _merge(links, more.get("links"))
    return Specs(
        devices={n: _build(DeviceSpec, n, e) for n, e in devices.items()},  # type: ignore[misc]
        links={n: _build(LinkSpec, n, e) for n, e in links.items()},  # type: ignore[misc]
    )
