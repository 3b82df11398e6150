"""Pool configs from Hydra: one pool's custom resources, several named pools for `tessera serve`."""

import pytest

from cluster.config import compose, pool_from_config, pools_from_config


def test_one_pool_takes_custom_resources_from_an_override():
    pool, address = pool_from_config(compose("render", ["pool.resources={h100: 1}", "pool.name=gpu"]))
    assert (pool.name, pool.resources, address) == ("gpu", {"h100": 1}, None)
    default, _ = pool_from_config(compose("render", []))
    assert (default.name, default.resources, default.env) == ("default", {}, {})


def test_the_workers_environment_from_an_override_as_strings():
    pool, _ = pool_from_config(compose("render", ["pool.env={MALLOC_MMAP_THRESHOLD_: 131072}"]))
    assert pool.env == {"MALLOC_MMAP_THRESHOLD_": "131072"}


def test_several_named_pools_in_order():
    cfg = compose("render", ["pools=[{name: big, workers: 2, resources: {big: 1}}, {name: small, device: cpu, workers: 1}]"])
    pools = pools_from_config(cfg)
    assert [(p.name, p.workers, p.device, p.resources) for p in pools] == [
        ("big", 2, "auto", {"big": 1}),
        ("small", 1, "cpu", {}),
    ]
    assert pools_from_config(compose("render", [])) == []


def test_a_pool_field_that_does_not_exist_is_refused():
    with pytest.raises(TypeError, match="colour"):
        pools_from_config(compose("render", ["pools=[{name: a, colour: red}]"]))
