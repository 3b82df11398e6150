"""Strategy "auto": for each placement the scheduler picks the strategy, degree, CFG split and Ring degree the
cost model predicts fastest among the model family's plans, and only a pick that passes the strategy's checks."""

from __future__ import annotations

import pytest
import ray
from _job_outputs import job_metadata
from _tiny_flux import save_tiny_flux

from cluster.client import Client
from cluster.errors import SpecError
from cluster.jobs.image import RenderSpec
from cluster.scheduler import CostModelDegreeRule, auto_choice, simple_degree_rule
from runtime.pool import PoolConfig

AUTO = {"strategy": "auto", "degree": "auto"}


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    return save_tiny_flux(tmp_path_factory.mktemp("flux-auto") / "tiny-flux")


@pytest.mark.parametrize(
    "parallel,field",
    [({"strategy": "auto", "degree": 2}, "parallel.degree"), ({**AUTO, "cfg": True}, "parallel.cfg")],
)
def test_auto_asks_for_the_degree_and_the_split_to_be_its_own(parallel, field):
    with pytest.raises(SpecError) as caught:
        RenderSpec.from_dict({"height": 256, "width": 256, "parallel": parallel})
    assert caught.value.field == field


def test_the_candidates_are_the_familys_plans_with_their_cfg_splits_when_guided(flux_dir):
    builtin = RenderSpec.from_dict({"height": 256, "width": 256, "guidance_scale": 5.0, "parallel": AUTO})
    assert builtin.plan_candidates(builtin.model) == ["patch", "cfg"]
    flux = RenderSpec.from_dict({"model": str(flux_dir), "height": 64, "width": 64, "parallel": AUTO})
    assert flux.plan_candidates(flux.model) == ["patch", "sequence"]  # distilled guidance: no second branch
    fields = {"model": str(flux_dir), "height": 64, "width": 64, "true_cfg_scale": 4.0, "parallel": AUTO}
    guided = RenderSpec.from_dict({**fields, "negative_prompt": "blurry"})
    assert guided.plan_candidates(guided.model) == ["patch", "cfg", "sequence", "sequence-cfg"]
    unguided = RenderSpec.from_dict(fields)  # FluxPipeline runs true CFG only with a negative prompt
    assert unguided.plan_candidates(unguided.model) == ["patch", "sequence"]


def test_a_tiny_image_stays_on_one_worker_and_a_tall_one_is_split():
    rule = CostModelDegreeRule("cpu-core", "loopback")
    tiny = RenderSpec.from_dict({"height": 64, "width": 64, "guidance_scale": 1.0, "parallel": AUTO})
    assert auto_choice(tiny, tiny.model, 4, rule) == {"strategy": "none", "degree": 1, "cfg": False, "ring": 1}
    tall = RenderSpec.from_dict({"height": 1024, "width": 1024, "parallel": AUTO})
    choice = auto_choice(tall, tall.model, 2, rule)
    assert choice["degree"] == 2 and choice["strategy"] == "patch"
    assert tall.runs(tall.placed(tall.model, choice["degree"], choice))
    # without a cost model (a GPU pool with no device named), bands at the simple rule's degree
    assert auto_choice(tall, tall.model, 2, simple_degree_rule)["strategy"] == "patch"


@pytest.mark.slow
def test_an_auto_job_runs_the_plan_it_was_given(ray_local, tmp_path):
    client = Client(state_dir=tmp_path / "state", pool=PoolConfig(workers=2, device="cpu"))
    try:
        spec = {"height": 256, "width": 256, "steps": 2, "output_dir": str(tmp_path / "out"), "parallel": AUTO}
        record = client.submit(spec).wait(timeout_s=300)
        assert record["state"] == "succeeded"
        [segment] = job_metadata(record)["segments"]
        assert (segment["strategy"], segment["degree"]) in (("patch", 2), ("none", 1))
    finally:
        ray.get(client.controller.stop.remote())
        ray.kill(client.controller)
