"""The Flux and SD3 families describe a pipeline directory for the cost model as the pipeline runs it (the
profile's forward on the meta device costs what the real transformer does on the real prompt encoding), so
degree=auto goes through the cost model for them instead of the band-height rule."""

from __future__ import annotations

import pytest
import torch
from _tiny_flux import save_tiny_flux
from _tiny_sd3 import save_tiny_sd3
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from cluster.jobs.image import RenderSpec
from cluster.scheduler import CostModelDegreeRule, simple_degree_rule
from parallel.cost.profile import profile_model
from pipelines.families.flux import FLUX
from pipelines.families.sd3 import SD3

HEIGHT, WIDTH = 64, 48


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux") / "tiny-flux")


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3") / "tiny-sd3")


def _real_flops(family, path, guidance: float, negative: str) -> tuple[int, dict, torch.Size]:
    """FLOPs of one denoiser call as a render makes it (both branches batched when guided), the conditioning
    and the latent's shape."""
    torch.manual_seed(0)
    pipe = family.load(path, "float32", "cpu")
    cond = family.encode(pipe, "red and blue stripes", negative, guidance, "cpu", image_size=(HEIGHT, WIDTH))
    shape = family.latent_shape(pipe, HEIGHT, WIDTH)
    latent = torch.zeros((2 if cond.guided else 1, *shape[1:]))
    counter = FlopCounterMode(display=False)
    # the math attention, as on the meta device: torch's CPU flash kernel has no FLOP formula to count
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        family.denoise(family.denoiser_of(pipe), latent, torch.tensor(500.0), cond.batched(), cond)
    params = sum(p.numel() for p in family.denoiser_of(pipe).parameters())
    return counter.get_total_flops(), {"cond": cond, "params": params}, shape


@pytest.mark.parametrize("family_name", ["flux", "sd3"])
def test_the_description_costs_what_the_pipeline_runs(family_name, flux_dir, sd3_dir):
    """Flux: batch 1 (distilled guidance), T5's text at __call__'s 512 tokens; SD3: CFG batched, CLIP's
    padded tokens then T5's 256."""
    family, path, guidance = {"flux": (FLUX, flux_dir, 3.5), "sd3": (SD3, sd3_dir, 5.0)}[family_name]
    flops, real, shape = _real_flops(family, path, guidance, "blurry")
    described = family.cost_model(path, "float32")
    prof = profile_model(described, HEIGHT, WIDTH)
    text = real["cond"].positive["encoder_hidden_states"]
    assert (described.text_len, described.text_dim) == tuple(text.shape[1:])
    assert described.extra["pooled_projections"] == real["cond"].positive["pooled_projections"].shape[1]
    assert described.latent_shape(1, HEIGHT, WIDTH) == tuple(shape)
    assert prof.flops == flops and prof.param_bytes == 4 * real["params"]
    assert prof.batch == (1 if family_name == "flux" else 2)


def test_degree_auto_asks_the_cost_model_for_flux(flux_dir):
    """A tall image of a tiny Flux: the band-height rule would split it in two; the cost model sees a CPU
    step bound by dispatch and 512 T5 tokens every band computes whole, and keeps it on one worker. (SD3's
    tiny model takes at most 256 px, where both rules keep one worker.)"""
    spec = RenderSpec.from_dict(
        {"model": str(flux_dir), "height": 512, "width": WIDTH, "steps": 4, "parallel": {"strategy": "patch", "degree": "auto"}}
    )
    model = spec.model_path()
    assert simple_degree_rule(spec, model, 4) == 2
    assert CostModelDegreeRule("cpu-core", "loopback")(spec, model, 4) == 1
