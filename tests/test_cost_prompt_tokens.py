"""The cost model prices a job's own ``max_sequence_length``: the prompt tokens a joint-attention model attends to
(Flux's T5 tokens; SD3's CLIP tokens and T5's; a video model's padded prompt), not the pipeline's default length,
which at small sizes is most of the sequence."""

from __future__ import annotations

import pytest
from _tiny_flux import save_tiny_flux
from _tiny_sd3 import save_tiny_sd3

from cluster.jobs.image import RenderSpec
from cluster.scheduler import CostModelDegreeRule


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompt-tokens")
    return {"flux": save_tiny_flux(root / "flux"), "sd3": save_tiny_sd3(root / "sd3")}


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_the_profile_attends_to_the_jobs_prompt_length(dirs, name):
    rule = CostModelDegreeRule()
    fields = {"model": str(dirs[name]), "prompt": "x", "height": 32, "width": 32}
    default = RenderSpec.from_dict(fields)
    short = RenderSpec.from_dict({**fields, "max_sequence_length": 16})
    family = default.model_family(default.model)
    described = family.cost_model(default.model_path(default.model), "float32")
    assert rule._profile(default, default.model).text_tokens == described.text_len
    clip = described.text_len - 256 if name == "sd3" else 0  # SD3: CLIP tokens before its 256 T5 ones
    assert rule._profile(short, short.model).text_tokens == clip + 16 < described.text_len
