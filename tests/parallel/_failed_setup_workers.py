"""Rank bodies for test_failed_setup_restores_pipeline.py: a render session whose set-up fails after the patch
strategy went on the worker's pipeline (a checkpoint that is not one), and what the pipeline looks like after."""

from __future__ import annotations

import torch

from cluster.jobs.image import RenderSpec
from pipelines.loading import load_pipeline
from runtime.jobs.image_session import RenderSession


def fingerprint(model: torch.nn.Module) -> list[tuple]:
    """What a strategy changes on a module tree: each module's class (swapped layers), its hooks and an
    instance-level forward."""
    return [
        (name, type(m).__name__, len(m._forward_hooks), len(m._forward_pre_hooks), "forward" in m.__dict__)
        for name, m in model.named_modules()
    ]


def failed_setup(rank: int, world: int, model_dir: str) -> tuple[bool, str, bool]:
    """(whether the patch strategy changes the denoiser at all, the failed set-up's error, whether the denoiser is
    as loaded after that failure)."""
    from pipelines.sampling import denoiser

    pipe = load_pipeline(model_dir)
    model = denoiser(pipe)
    before = fingerprint(model)
    spec = RenderSpec.from_dict(
        {"model": model_dir, "height": 64, "width": 64, "steps": 2, "seed": 1,
         "parallel": {"strategy": "patch", "degree": world, "mode": "sync"}}
    )
    session = RenderSession(pipe, spec, world=world)
    changes = fingerprint(model) != before
    session.close()
    try:
        RenderSession(pipe, spec, world=world, resume={"not": "a checkpoint"})
    except KeyError as err:
        error = repr(err)
    else:
        error = ""
    return changes, error, fingerprint(model) == before
