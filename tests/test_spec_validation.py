"""Bad job specs are refused before any worker starts, with a message naming the field."""

import pytest

from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec

BAD_SPECS = [
    ({"height": -8}, "height"),
    ({"width": 100}, "width"),
    ({"height": 0}, "height"),
    ({"height": 32768}, "height"),
    ({"height": 16384, "width": 16384}, "height"),
    ({"steps": 0}, "steps"),
    ({"steps": 5000}, "steps"),
    ({"seed": -1}, "seed"),
    ({"guidance_scale": -1.0}, "guidance_scale"),
    ({"sampler": "heun9000"}, "sampler"),
    ({"dtype": "float8"}, "dtype"),
    ({"model": "/definitely/not/here"}, "model"),
    ({"model": ""}, "model"),
    ({"height": "512"}, "height"),
    ({"steps": True}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"prompt": 7}, "prompt"),
    ({"parallel": {"strategy": "magic"}}, "parallel.strategy"),
    ({"parallel": {"strategy": "none", "degree": 0}}, "parallel.degree"),
    ({"parallel": {"strategy": "none", "degree": 2}}, "parallel.degree"),
    ({"parallel": {"wat": 1}}, "parallel.wat"),
    ({"parallel": "fast"}, "parallel"),
    ({"resolution": 4}, "resolution"),
    ({"output_dir": ""}, "output_dir"),
    ({"parallel": {"strategy": "patch", "degree": 2, "mode": "telepathic"}}, "parallel.mode"),
    ({"parallel": {"strategy": "patch", "degree": 3, "cfg": True}}, "parallel.degree"),
    ({"parallel": {"strategy": "patch", "degree": 2, "cfg": True}, "guidance_scale": 1.0}, "parallel.cfg"),
    ({"parallel": {"strategy": "patch", "degree": 2, "warmup_steps": -1}}, "parallel.warmup_steps"),
    ({"parallel": {"strategy": "patch", "degree": 2, "cfg": "yes"}}, "parallel.cfg"),
    ({"parallel": {"strategy": "patch", "degree": 2, "mode": "displaced", "stale_dtype": "fp8"}}, "parallel.stale_dtype"),
    ({"parallel": {"strategy": "patch", "degree": 2, "kv_source": "hidden"}}, "parallel.kv_source"),
    # 32 px = 4 latent rows; the built-in UNet needs bands of >= 4 rows, so 2 bands do not fit
    ({"height": 32, "parallel": {"strategy": "patch", "degree": 2}}, "parallel.degree"),
    ({"output_dir": "renders/../../etc"}, "output_dir"),
]
"""(change to a valid spec, the field the error must name): shared with the job-service test."""


@pytest.mark.parametrize("change,field", BAD_SPECS)
def test_bad_spec_names_the_field(change, field):
    data = RenderSpec().to_dict()
    data.update(change)
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}:")


def test_default_spec_is_valid():
    spec = RenderSpec.from_dict({"height": 64, "width": 64, "steps": 2})
    assert spec.model == "builtin-image" and spec.parallel.degree == 1


def test_patch_spec_with_uneven_bands_is_valid():
    # 104 px = 13 latent rows: bands of 4, 4 and 5 rows
    spec = RenderSpec.from_dict({"height": 104, "parallel": {"strategy": "patch", "degree": 3}})
    assert spec.parallel.patch_workers == 3
    cfg = RenderSpec.from_dict({"height": 104, "parallel": {"strategy": "patch", "degree": 4, "cfg": True}})
    assert cfg.parallel.patch_workers == 2


def test_degree_larger_than_pool_is_refused():
    spec = RenderSpec()
    spec.parallel.degree = 3
    with pytest.raises(SpecError, match="parallel.degree"):
        spec.check_fits(2)
