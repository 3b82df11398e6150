"""Every malformed submission of the table (tests/_malformed_specs.py) is refused with a SpecError naming
its field, in a one-line message that starts with the field, by the spec alone (``parse_job``) or by the
submission checks alone (``cluster.admission``); the specs near them stay valid."""

from __future__ import annotations

import pytest
from _malformed_specs import MALFORMED, OTHER_KIND, SUGGESTIONS, VALID, Malformed, representative

from cluster.admission import check_client_token, check_priority
from cluster.errors import SpecError
from cluster.jobs import parse_job

LONGEST_MESSAGE = 1000
"""A refusal is read by a person: values it quotes are shortened (a 5,000-character name is not echoed). (The
longest now, about 300 characters, lists the denoiser classes of every image family.)"""


def assert_names_the_field(err: SpecError, row: Malformed) -> None:
    """The refusal names the row's field, in one line that starts with it, with the hints the table asks for."""
    text = str(err)
    assert err.field == row.field, text
    assert text.startswith(f"{row.field}: "), text
    assert len(text.splitlines()) == 1 and "\n" not in text and "\r" not in text, text
    assert len(text) <= LONGEST_MESSAGE, text[:200]
    if row.field in SUGGESTIONS and row.mistake == "unknown":
        assert text.endswith(SUGGESTIONS[row.field]), text
    other = OTHER_KIND.get((row.kind, row.field))
    if other is not None:
        assert f"job={other}" in text, text


@pytest.mark.parametrize("row", [r for r in MALFORMED if r.where == "spec"], ids=str)
def test_the_spec_refuses_naming_the_field(row):
    with pytest.raises(SpecError) as caught:
        parse_job(row.spec())
    assert_names_the_field(caught.value, row)


@pytest.mark.parametrize("row", [r for r in MALFORMED if r.where == "admission"], ids=str)
def test_the_submission_arguments_are_refused_naming_the_field(row):
    parse_job(row.spec())  # the spec itself is valid
    with pytest.raises(SpecError) as caught:
        check_priority(row.submit.get("priority", 0))
        check_client_token(row.submit.get("client_token"))
    assert_names_the_field(caught.value, row)


@pytest.mark.parametrize("row", [r for r in MALFORMED if r.where == "service"], ids=str)
def test_what_only_the_service_can_refuse_is_a_valid_spec(row):
    """A device no pool has, a degree above the pool, a reused token: the spec alone is fine (the service test
    checks that the controller refuses them)."""
    parse_job(row.spec())


@pytest.mark.parametrize("kind,change", VALID, ids=lambda v: repr(v)[:40])
def test_specs_near_the_refusals_stay_valid(kind, change):
    from _malformed_specs import BASES

    spec = parse_job({**BASES[kind], **change})
    assert spec.kind == kind and all(getattr(spec, k) == v for k, v in change.items())


def test_the_table_covers_every_mistake_on_both_kinds():
    assert len(MALFORMED) >= 100
    mistakes = {row.mistake for row in MALFORMED}
    assert mistakes >= {
        "sizes",
        "types",
        "nan",
        "text",
        "paths",
        "unknown",
        "kinds",
        "nesting",
        "segments",
        "steps",
        "job",
        "device",
        "tokens",
        "priority",
    }
    assert {row.kind for row in MALFORMED} == {"image", "video"}
    chosen = representative(MALFORMED)
    assert len(chosen) >= 15 and {row.mistake for row in chosen} == mistakes
