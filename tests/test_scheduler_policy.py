"""The scheduling policy on its own: worker choice, whom to pause, the degree=auto rule."""

import pytest

from cluster.jobs.image import RenderSpec
from cluster.scheduler import (
    CostModelDegreeRule,
    RunningJob,
    WorkerBook,
    choose_pool,
    jobs_to_pause,
    pools_to_pause,
    simple_degree_rule,
    wanted_degree,
)

AUTO = {"strategy": "patch", "degree": "auto"}


def test_take_prefers_workers_that_hold_the_model():
    book = WorkerBook(4)
    assert book.take(1, "a") == [0]
    book.give_back([0])
    assert book.take(1, "b") == [1]  # worker 0 holds "a": "b" goes to the empty worker
    book.give_back([1])
    assert book.take(1, "b") == [1]  # now worker 1 holds "b"
    assert book.take(2, "a") == [0, 2]
    assert book.free == {3}
    with pytest.raises(ValueError, match="2 workers wanted, 1 free"):
        book.take(2, "a")


def test_forgotten_workers_lose_their_models():
    book = WorkerBook(2)
    book.take(1, "a")
    book.forget([0])
    book.give_back([0])
    book.take(1, "b")
    assert book.models[0] == {"b"}


def _running(job_id, priority, workers, submitted_at=0.0):
    return RunningJob(job_id, priority, submitted_at, workers)


def test_pause_the_lowest_priority_and_latest_submitted_first():
    running = [_running("old-low", 0, [0], 1.0), _running("new-low", 0, [1], 2.0), _running("mid", 5, [2])]
    assert jobs_to_pause(10, 1, 0, running, set()) == ["new-low"]
    assert jobs_to_pause(10, 2, 0, running, set()) == ["new-low", "old-low"]
    assert jobs_to_pause(10, 3, 0, running, set()) == ["new-low", "old-low", "mid"]


def test_never_pause_equal_or_higher_priority_or_pointlessly():
    running = [_running("a", 5, [0]), _running("b", 7, [1])]
    assert jobs_to_pause(5, 1, 0, running, set()) == []  # equal priority: it waits its turn
    assert jobs_to_pause(6, 2, 0, running, set()) == []  # pausing "a" alone frees too few
    assert jobs_to_pause(9, 1, 1, running, set()) == []  # a free worker is enough already
    assert jobs_to_pause(9, 2, 0, running, {"a"}) == ["b"]  # "a" is already being paused


def test_fixed_degree_waits_for_its_workers():
    spec = RenderSpec.from_dict({"height": 128, "parallel": {"strategy": "patch", "degree": 2}})
    path = spec.model_path()
    assert wanted_degree(spec, path, 1, simple_degree_rule) is None
    assert wanted_degree(spec, path, 3, simple_degree_rule) == 2


def test_auto_degree_grows_with_the_image_and_takes_what_is_free():
    tiny = RenderSpec.from_dict({"height": 128, "width": 128, "parallel": AUTO})
    tall = RenderSpec.from_dict({"height": 1024, "width": 256, "parallel": AUTO})
    path = tiny.model_path()
    assert simple_degree_rule(tiny, path, 4) == 1
    assert simple_degree_rule(tall, path, 4) == 4
    assert simple_degree_rule(tall, path, 3) == 3
    assert wanted_degree(tall, path, 2, simple_degree_rule) == 2
    assert wanted_degree(tall, path, 0, simple_degree_rule) is None


def test_placed_spec_fixes_model_and_degree():
    spec = RenderSpec.from_dict(
        {"height": 512, "steps": 6, "parallel": AUTO, "segments": [{"steps": 4}, {"steps": 2}]}
    )
    assert spec.segment_at(0) == ("builtin-image", 4) and spec.segment_at(4) == ("builtin-image", 6)
    one = spec.placed("builtin-image", 1)
    assert one.parallel.strategy == "none" and one.parallel.degree == 1 and one.segments == []
    two = spec.placed("builtin-image", 2)
    assert two.parallel.strategy == "patch" and two.parallel.degree == 2


def test_cost_model_rule_gives_a_large_image_more_workers_than_a_tiny_one():
    rule = CostModelDegreeRule("cpu-core", "loopback")
    tiny = RenderSpec.from_dict({"height": 64, "width": 64, "parallel": AUTO})
    large = RenderSpec.from_dict({"height": 1024, "width": 1024, "parallel": AUTO})
    path = tiny.model_path()
    assert rule(tiny, path, 2) == 1
    assert rule(large, path, 2) == 2
    assert rule(large, path, 1) == 1


def _fixed(degree):
    return RenderSpec.from_dict({"height": 64, "width": 64, "parallel": {"strategy": "patch", "degree": degree}})


def test_choose_pool_keeps_a_job_inside_one_pool():
    book = WorkerBook(3)
    pools = {"big": {0, 1}, "small": {2}}
    rules = {"big": simple_degree_rule, "small": simple_degree_rule}
    assert choose_pool(_fixed(2), "m", "k", pools, book, rules) == ("big", 2)
    book.take(1, "k", among={0})
    # one free in each pool: two workers are free, but not in one pool
    assert choose_pool(_fixed(2), "m", "k", pools, book, rules) is None
    assert choose_pool(_fixed(1), "m", "k", {"small": {2}}, book, rules) == ("small", 1)


def test_choose_pool_prefers_the_pool_holding_the_model_then_the_first_listed():
    book = WorkerBook(2)
    pools = {"a": {0}, "b": {1}}
    rules = {"a": simple_degree_rule, "b": simple_degree_rule}
    assert choose_pool(_fixed(1), "m", "k", pools, book, rules) == ("a", 1)
    book.take(1, "k", among={1})
    book.give_back([1])
    assert choose_pool(_fixed(1), "m", "k", pools, book, rules) == ("b", 1)


def test_pools_to_pause_only_frees_workers_in_one_allowed_pool():
    pools = {"big": {0, 1}, "small": {2}}
    running = [_running("low-big", 0, [0]), _running("low-small", 0, [2])]
    # worker 1 free in big: pausing the big job frees 2 there
    assert pools_to_pause(5, 2, pools, {1}, running, set()) == ["low-big"]
    # only "small" allowed: its one job is the victim; it cannot make 2 workers
    assert pools_to_pause(5, 1, {"small": {2}}, {1}, running, set()) == ["low-small"]
    assert pools_to_pause(5, 2, {"small": {2}}, {1}, running, set()) == []
    # a worker already coming free in the pool: nobody else is paused
    assert pools_to_pause(5, 2, pools, {1}, running, {"low-big"}) == []
