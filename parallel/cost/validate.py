"""Hold the cost model's predictions against measured and published figures (``references.yaml``).

Each reference names a model, a size, a device, a link and the run's inputs (steps, warmup, scheme),
and lists cases (strategy, degree, mode, the reference value of ``metric``: "step_s", "speedup" or
"activation_mib").
``validate()`` predicts every case and returns the relative error; the test suite and
``python -m bench.cost_validation`` both read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from parallel.cost.predict import cached_profile, predict_model
from parallel.cost.specs import load_specs

REFERENCES_YAML = Path(__file__).with_name("references.yaml")


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

    @property
    def error(self) -> float:
        """Relative error of the prediction."""
        return (self.predicted - self.reference_value) / self.reference_value


def load_references(path: str | Path = REFERENCES_YAML) -> dict[str, dict]:
    return yaml.safe_load(Path(path).read_text())


def validate(name: str | None = None, path: str | Path = REFERENCES_YAML) -> list[Check]:
    """Checks of every case of reference ``name`` (all references when None)."""
    refs = load_references(path)
    checks = []
    for key, ref in refs.items():
        if name is not None and key != name:
            continue
        for case in ref["cases"]:
            p = predict_model(
                ref["model"],
                ref["height"],
                ref["width"],
                case["strategy"],
                case["degree"],
                ref["device"],
                ref["link"],
                case["mode"],
                steps=ref["steps"],
                warmup_steps=ref.get("warmup_steps", 0),
                include_vae=ref.get("include_vae", False),
                scheme=ref.get("scheme", "neighbour"),
            )
            value = {
                "step_s": p.step_s,
                "speedup": p.speedup,
                "activation_mib": (p.memory_bytes - _param_bytes(ref)) / 2**20,
            }[ref["metric"]]
            checks.append(
                Check(
                    key,
                    case["strategy"],
                    case["degree"],
                    case["mode"],
                    ref["metric"],
                    float(case["value"]),
                    value,
                    bool(case.get("calibration", False)),
                )
            )
    return checks


def _param_bytes(ref: dict) -> float:
    dtype = load_specs().device(ref["device"]).dtype
    return cached_profile(ref["model"], ref["height"], ref["width"], 1, 2, dtype).param_bytes
