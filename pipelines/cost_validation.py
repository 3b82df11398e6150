"""Hold the cost model's predictions against measured and published figures (``references.yaml``).

Each reference names a model, a size, a device, a link and the run's inputs (steps, warmup, scheme),
and lists cases (strategy, degree, mode, the reference value of ``metric``: "step_s", "speedup" or
"activation_mib"; or "samples_per_s" for training, whose strategies are "none", "data" and "pipeline").
``validate()`` predicts every case and returns the relative error; the test suite and
``python -m bench.cost_validation`` both read it. ``fit_half_efficiency()`` fits a device's efficiency
falloff (``DeviceSpec.half_efficiency_flops``) to a reference's cases: how specs.yaml's constant was found.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from parallel.cost.models import build_meta, get_model_spec
from parallel.cost.predict import cached_profile, predict_model, predict_training
from parallel.cost.specs import load_specs
from parallel.cost.traffic import carry_bytes
from pipelines.families.sd.training import unet_layers

REFERENCES_YAML = Path(__file__).resolve().parents[1] / "parallel" / "cost" / "references.yaml"


@dataclass
class Check:
    """One prediction beside its reference figure."""

    reference: str
    """Key in references.yaml."""
    strategy: str
    """Strategy of the case."""
    degree: int
    """Workers."""
    mode: str
    """Patch mode."""
    metric: str
    """"step_s", "speedup" or "activation_mib" (per-worker memory less the parameters)."""
    reference_value: float
    """Measured or published figure."""
    predicted: float
    """The cost model's figure."""
    calibration: bool
    """True when the reference value was an input of the model (not a test of it)."""
    held: bool = True
    """False for a row shown beside its reference but not held to the tolerance (a known, explained gap)."""
    ring: int = 1
    """Sequence parallelism: the Ring degree of the case (the rest of its workers are Ulysses)."""

    @property
    def error(self) -> float:
        """Relative error of the prediction."""
        return (self.predicted - self.reference_value) / self.reference_value


def load_references(path: str | Path = REFERENCES_YAML) -> dict[str, dict]:
    return yaml.safe_load(Path(path).read_text())


def validate(
    name: str | None = None, path: str | Path = REFERENCES_YAML, half_efficiency_flops: float | None = None
) -> list[Check]:
    """Checks of every case of reference ``name`` (all references when None). ``half_efficiency_flops``
    replaces the inference devices' falloff constant (0: the model without it); None keeps specs.yaml's."""
    refs = load_references(path)
    checks = []
    for key, ref in refs.items():
        if name is not None and key != name:
            continue
        for case in ref["cases"]:
            if ref["metric"] == "samples_per_s":
                value = _training_samples_per_s(ref, case)
            else:
                value = _inference_value(ref, case, half_efficiency_flops)
            checks.append(
                Check(key, case["strategy"], case["degree"], case["mode"], ref["metric"], float(case["value"]),
                      value, bool(case.get("calibration", False)), bool(case.get("held", True)),
                      int(case.get("ring", 1)))
            )
    return checks


def fit_half_efficiency(name: str, path: str | Path = REFERENCES_YAML, most: float = 5e10) -> float:
    """The ``half_efficiency_flops`` in [0, ``most``] that minimises the sum of squared relative errors of
    reference ``name``'s held, non-calibration cases (golden-section search; the error is smooth and has one
    minimum in the constant)."""

    def loss(value: float) -> float:
        checks = [c for c in validate(name, path, value) if c.held and not c.calibration]
        return sum(c.error**2 for c in checks)

    ratio = (math.sqrt(5) - 1) / 2
    low, high = 0.0, most
    while high - low > most * 1e-4:
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) <= loss(b):
            high = b
        else:
            low = a
    return (low + high) / 2


def _inference_value(ref: dict, case: dict, half_efficiency_flops: float | None = None) -> float:
    device = load_specs().device(ref["device"])
    if half_efficiency_flops is not None:
        device = dataclasses.replace(device, half_efficiency_flops=half_efficiency_flops)
    p = predict_model(
        ref["model"], ref["height"], ref["width"], case["strategy"], case["degree"], device,
        ref["link"], case["mode"], steps=ref["steps"], warmup_steps=ref.get("warmup_steps", 0),
        include_vae=ref.get("include_vae", False), scheme=ref.get("scheme", "neighbour"), ring=case.get("ring", 1),
    )
    return {
        "step_s": p.step_s,
        "speedup": p.speedup,
        "activation_mib": (p.memory_bytes - _param_bytes(ref)) / 2**20,
    }[ref["metric"]]


def _training_samples_per_s(ref: dict, case: dict) -> float:
    """Training throughput of a UNet; the pipeline's cut carries the largest layer-to-layer tuple."""
    dtype = load_specs().device(ref["device"]).dtype
    prof = cached_profile(ref["model"], ref["height"], ref["width"], 1, ref["micro_batch"], dtype)
    cut = 0.0
    if case["strategy"] == "pipeline":
        spec = get_model_spec(ref["model"])
        unet = build_meta(spec, getattr(torch, dtype))
        b = ref["micro_batch"]
        inputs = (
            torch.empty(spec.latent_shape(b, ref["height"], ref["width"]), device="meta", dtype=getattr(torch, dtype)),
            torch.zeros(b, dtype=torch.long, device="meta"),
            torch.empty(b, spec.text_len, spec.text_dim, device="meta", dtype=getattr(torch, dtype)),
        )
        cut = float(max(carry_bytes(unet_layers(unet), inputs)[:-1]))
    return predict_training(
        prof, case["strategy"], case["degree"], ref["device"], ref["link"], ref["micro_batches"], cut
    )


def _param_bytes(ref: dict) -> float:
    dtype = load_specs().device(ref["device"]).dtype
    return cached_profile(ref["model"], ref["height"], ref["width"], 1, 2, dtype).param_bytes
