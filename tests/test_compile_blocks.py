"""``compile=true``: the denoiser's repeated blocks run compiled, the first job on a worker pays the compile and
later ones reuse it, a job without it runs eager on the same cached model; the result stays the eager one's."""

from __future__ import annotations

import pytest
import torch

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from pipelines.loading import load_pipeline
from runtime.jobs.image_session import open_render_session


def _run(pipe, spec: RenderSpec, compiled: bool) -> tuple[dict, torch.Tensor]:
    session = open_render_session(pipe, RenderSpec(**{**spec.input_fields(), "compile": compiled}))
    try:
        session.advance(spec.steps)
        return session.finish()["compile"], session.latents()
    finally:
        session.close()


def test_compiled_blocks_are_compiled_once_and_switched_per_job():
    torch.set_num_threads(1)
    spec = RenderSpec.from_dict({"height": 64, "width": 64, "steps": 2, "parallel": {"strategy": "none"}})
    spec = spec.placed(spec.model, 1)
    pipe = load_pipeline(spec.model)
    eager_report, eager = _run(pipe, spec, False)
    first, compiled = _run(pipe, spec, True)
    again, _ = _run(pipe, spec, True)
    after, eager_again = _run(pipe, spec, False)
    assert eager_report["compiled"] is False and eager_report["blocks"] > 0
    assert first == {"compiled": True, "blocks": eager_report["blocks"], "first_compile": True}
    assert again["compiled"] is True and again["first_compile"] is False
    assert after["compiled"] is False
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
    assert torch.equal(eager_again, eager)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_compile_must_be_a_boolean(value):
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"height": 64, "width": 64, "compile": value})
    assert caught.value.field == "compile"
