"""PatchConfig validation."""

import pytest

from parallel.patch.config import PatchConfig


def test_modes_accepted():
    assert PatchConfig("sync").mode == "sync"
    assert PatchConfig("displaced", warmup_steps=0).warmup_steps == 0


def test_unknown_mode_names_the_field():
    with pytest.raises(ValueError, match=r"PatchConfig\.mode.*'async'"):
        PatchConfig("async")


def test_negative_warmup_names_the_field():
    with pytest.raises(ValueError, match=r"warmup_steps"):
        PatchConfig("displaced", warmup_steps=-1)


def test_bad_release_lag_names_the_field():
    with pytest.raises(ValueError, match=r"PatchConfig\.release_lag.*0"):
        PatchConfig("displaced", release_lag=0)


def test_unknown_stale_dtype_names_the_field():
    assert PatchConfig("displaced", stale_dtype="bfloat16").stale_dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"PatchConfig\.stale_dtype.*'int8'"):
        PatchConfig("displaced", stale_dtype="int8")


def test_unknown_kv_source_names_the_field():
    assert PatchConfig("displaced", kv_source="input").kv_source == "input"
    with pytest.raises(ValueError, match=r"PatchConfig\.kv_source.*'hidden'"):
        PatchConfig("displaced", kv_source="hidden")
