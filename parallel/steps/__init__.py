"""Step parallelism (ParaStep): adjacent denoising steps on different workers, only their noise exchanged."""

from parallel.steps.reuse_predict import ReuseThenPredict

__all__ = ["ReuseThenPredict"]
