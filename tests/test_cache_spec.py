"""The job spec's ``cache`` section: each bad field refused naming it, before any worker starts; a mode that
does not fit the model's family refused naming ``cache.mode`` and the family; the CLI's ``cache=`` group."""

from __future__ import annotations

import pytest
from _tiny_flux import save_tiny_flux

from cluster.config import compose_job, spec_from_config
from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-cache-spec") / "tiny-flux")


def _refused(spec: dict) -> SpecError:
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict(spec)
    return caught.value


@pytest.mark.parametrize(
    "cache, field",
    [
        ("deepcache", "cache"),
        ({"mode": "teacache"}, "cache.mode"),
        ({"mode": 3}, "cache.mode"),
        ({"mode": "deepcache", "intervall": 3}, "cache.intervall"),
        ({"mode": "deepcache", "interval": 0}, "cache.interval"),
        ({"mode": "deepcache", "interval": 2.5}, "cache.interval"),
        ({"mode": "deepcache", "interval": True}, "cache.interval"),
        ({"mode": "deepcache", "branch": -1}, "cache.branch"),
        ({"mode": "deepcache", "branch": 9}, "cache.branch"),  # the built-in UNet has fewer down blocks
        ({"mode": "deepcache", "warmup_steps": -1}, "cache.warmup_steps"),
        ({"mode": "deepcache", "max_skips": 0}, "cache.max_skips"),
        ({"mode": "deepcache", "threshold": 0}, "cache.threshold"),
        ({"mode": "deepcache", "threshold": "high"}, "cache.threshold"),
        ({"mode": "first-block"}, "cache.mode"),  # a UNet has no transformer blocks
    ],
)
def test_bad_cache_fields_are_named(cache, field):
    assert _refused({"height": 64, "width": 64, "cache": cache}).field == field


def test_a_transformer_family_refuses_deepcache_naming_the_family(flux_dir):
    error = _refused({"model": str(flux_dir), "height": 64, "width": 64, "cache": {"mode": "deepcache"}})
    assert error.field == "cache.mode" and "flux" in str(error) and "first-block" in str(error)


def test_a_cache_section_fits_its_family_and_is_stored(flux_dir):
    spec = RenderSpec.from_dict({"model": str(flux_dir), "height": 64, "width": 64, "cache": {"mode": "first-block"}})
    assert spec.cache.mode == "first-block"
    again = RenderSpec.from_dict(spec.stored())
    assert again.cache == spec.cache
    assert RenderSpec.from_dict({"height": 64, "width": 64}).cache.mode == "none"


def test_the_cli_groups_build_cache_sections():
    spec = spec_from_config(compose_job(["cache=deepcache", "cache.interval=4", "height=64", "width=64"]))
    assert (spec.cache.mode, spec.cache.interval) == ("deepcache", 4)
    assert spec_from_config(compose_job(["height=64", "width=64"])).cache.mode == "none"
    # the README's budget form, without Hydra's "+": every mode that calibrates declares the key
    for mode in ("first-block", "teacache", "block-cache", "deepcache", "taylorseer"):
        config = compose_job([f"cache={mode}", "cache.min_psnr=30"])
        assert (config.cache.mode, config.cache.min_psnr) == (mode, 30)
        assert compose_job([f"cache={mode}"]).cache.min_psnr is None
    spec = spec_from_config(compose_job(["cache=deepcache", "cache.min_psnr=30", "height=64", "width=64"]))
    assert (spec.cache.mode, spec.cache.min_psnr) == ("deepcache", 30)


def test_a_video_job_has_no_cache_section():
    from cluster.jobs.video import VideoSpec

    with pytest.raises(SpecError) as caught:
        VideoSpec.from_dict({"cache": {"mode": "first-block"}})
    assert caught.value.field == "cache"
