"""Device and link specs are data: the built-in file loads, and an extra YAML adds or overrides entries."""

import pytest

from parallel.cost.specs import load_specs


def test_builtin_specs_have_the_devices_and_links_we_model():
    specs = load_specs()
    for name in ("a100-80gb", "h100", "h200", "rtx4090", "cpu-core"):
        assert specs.device(name).flops > 0
    for name in ("nvlink3", "nvlink4", "pcie4", "ethernet-10g", "loopback"):
        assert specs.link(name).bandwidth_Bps > 0
    assert specs.link("nvlink3").bandwidth_Bps > specs.link("pcie4").bandwidth_Bps > specs.link("ethernet-10g").bandwidth_Bps


def test_extra_yaml_adds_and_overrides(tmp_path):
    extra = tmp_path / "site.yaml"
    extra.write_text(
        "devices:\n  a100-80gb: {efficiency: 0.5}\n  mi300x: {peak_flops: 1.3e15, efficiency: 0.3, memory_bytes: 1.9e11}\n"
        "links:\n  roce-400g: {bandwidth_Bps: 4.5e10, latency_s: 1.0e-5}\n"
    )
    specs = load_specs(extra)
    assert specs.device("a100-80gb").efficiency == 0.5
    assert specs.device("a100-80gb").peak_flops == load_specs().device("a100-80gb").peak_flops
    assert specs.device("mi300x").flops == pytest.approx(3.9e14)
    assert specs.link("roce-400g").seconds(4.5e10, 2) == pytest.approx(1.0 + 2e-5)


def test_unknown_names_and_fields_are_refused(tmp_path):
    with pytest.raises(KeyError, match="tpu"):
        load_specs().device("tpu")
    bad = tmp_path / "bad.yaml"
    bad.write_text("links:\n  x: {bandwidth: 1.0, latency_s: 0.1}\n")
    with pytest.raises(ValueError, match="bandwidth"):
        load_specs(bad)
