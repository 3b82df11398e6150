"""Device kinds and their collective backends: the CUDA path and the CPU path are the same code."""

from __future__ import annotations

from dataclasses import dataclass

CPU = "cpu"
CUDA = "cuda"
BACKENDS = {CPU: "gloo", CUDA: "nccl"}


@dataclass(frozen=True)
class DeviceSlot:
    kind: str
    """"cpu" or "cuda"."""
    ray_resources: dict
    """What one worker asks Ray for: a GPU (and a CPU to drive it), or one CPU slot."""
    torch_threads: int
    """Torch intra-op threads per worker: one on a CPU slot, so a worker is the analogue of one GPU."""

    @property
    def backend(self) -> str:
        return BACKENDS[self.kind]


def device_slot(kind: str) -> DeviceSlot:
    if kind == CUDA:
        return DeviceSlot(CUDA, {"CPU": 1, "GPU": 1}, torch_threads=4)
    if kind == CPU:
        return DeviceSlot(CPU, {"CPU": 1}, torch_threads=1)
    raise ValueError(f"device: unknown device kind {kind!r}; expected 'cpu', 'cuda' or 'auto'")


def resolve_device_kind(requested: str, gpus_in_cluster: float, workers: int) -> str:
    """'auto' means CUDA when the cluster has a GPU for every worker, else CPU."""
    if requested == "auto":
        return CUDA if gpus_in_cluster >= workers > 0 else CPU
    if requested == CUDA and gpus_in_cluster < workers:
        raise ValueError(
            f"device: {workers} CUDA workers requested but the cluster has {gpus_in_cluster:g} GPUs"
        )
    device_slot(requested)
    return requested
