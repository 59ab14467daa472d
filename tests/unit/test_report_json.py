"""The report topic's bytes: `to_json_bytes()` writes exactly what `model_dump_json()` writes, for
any record the models accept (generated from the models' own fields), and the JSON Schema of
`kldrift report-schema` accepts it."""

from __future__ import annotations

import json
import math
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import annotated_types
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel

from kldrift.schemas.report import DriftReport, WindowSummary, report_json_schema

EDGE_FLOATS = [
    0.0,
    -0.0,
    5e-324,  # the smallest subnormal
    2.2250738585072014e-308,
    1e-7,
    1e-5,
    0.1,
    1 / 3,
    1e15,
    1e16,  # the first float pydantic writes with an exponent: 1e+16
    -1.5e16,
    1.2345678901234568e20,
    1.7976931348623157e308,
]
EDGE_TEXT = ["", "1e16", ":1e16,", '"quoted"\\', "\x00\x1f\x7f", "\u2028", "é中😀", "[200, +inf)"]
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=1))]
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def values_of(annotation: Any, metadata: list[Any], *, finite: bool) -> st.SearchStrategy[Any]:
    """Values a field of this type accepts; a type this test does not know fails loudly, so a
    field of a new kind cannot reach the wire untested."""
    origin = typing.get_origin(annotation)
    if annotation is str:
        return st.one_of(st.text(), st.sampled_from(EDGE_TEXT))
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        least = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), -(2**80))
        return st.one_of(st.integers(least, 2**80), st.sampled_from([least, 2**63, 2**64]))
    if annotation is float:
        floats = st.floats(allow_nan=not finite, allow_infinity=not finite)
        return st.one_of(floats, st.sampled_from(EDGE_FLOATS))
    if annotation in (datetime, AwareDatetime):
        return st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.sampled_from(ZONES),
        )
    if annotation is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return st.one_of([values_of(a, [], finite=finite) for a in typing.get_args(annotation)])
    if origin is list:
        (item,) = typing.get_args(annotation)
        return st.lists(values_of(item, [], finite=finite), max_size=5)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return records_of(annotation, finite=finite)
    raise TypeError(f"no values for {annotation}: teach tests/unit/test_report_json.py this type")


def records_of(model: type[BaseModel], *, finite: bool) -> st.SearchStrategy[Any]:
    fields = {
        name: values_of(field.annotation, field.metadata, finite=finite)
        for name, field in model.model_fields.items()
    }
    return st.builds(model, **fields)


def any_record(*, finite: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        records_of(DriftReport, finite=finite), records_of(WindowSummary, finite=finite)
    )


@EXAMPLES
@given(any_record(finite=False))
def test_the_bytes_are_model_dump_json_for_any_record(record: DriftReport | WindowSummary) -> None:
    assert record.to_json_bytes() == record.model_dump_json().encode()


@EXAMPLES
@given(any_record(finite=True))
def test_the_schema_accepts_the_bytes_and_they_parse_back(record: Any) -> None:
    wire = record.to_json_bytes()

    jsonschema.Draft202012Validator(report_json_schema()).validate(json.loads(wire))
    assert type(record).model_validate_json(wire) == record


def test_a_field_of_a_kind_this_test_does_not_know_fails_loudly() -> None:
    class Reading(BaseModel):
        sensor: str
        delay: timedelta

    for model in (DriftReport, WindowSummary):
        records_of(model, finite=True)  # every field's type is known
    with pytest.raises(TypeError, match="timedelta"):
        records_of(Reading, finite=True)


def test_edge_values_are_written_as_pydantic_writes_them() -> None:
    report = DriftReport.model_validate(
        {
            "pipeline": "shop",
            "key": "é中😀",
            "feature": 'a "quoted" \\ name',
            "window_start": "2024-01-01T00:00:00Z",
            "window_end": "2024-01-01T00:10:00.5+05:30",
            "revision": 0,
            "count": 2**70,
            "missing": 0,
            "invalid": 0,
            "kl_bits": 1e16,
            "kl_bits_debiased": -0.0,
            "entropy_bits": 5e-324,
            "cross_entropy_bits": 1e-7,
            "js_bits": math.nan,
            "psi": math.inf,
            "p_value": None,
            "threshold_bits": 0.05,
            "significance": 0.01,
            "drift": False,
            "top_bins": [
                {"bin": "[1e16, +inf)", "window_p": 1.0, "baseline_q": 0.5, "contribution_bits": 1}
            ],
            "baseline_id": "3e5",
            "other_values": [{"value": "\n", "count": 1}],
        }
    )

    assert (
        report.to_json_bytes()
        == (
            '{"schema_version":3,"record":"feature","pipeline":"shop","key":"é中😀",'
            '"feature":"a \\"quoted\\" \\\\ name","window_start":"2024-01-01T00:00:00Z",'
            '"window_end":"2024-01-01T00:10:00.500000+05:30","revision":0,'
            '"count":1180591620717411303424,"missing":0,"invalid":0,"kl_bits":1e+16,'
            '"kl_bits_debiased":-0.0,"entropy_bits":5e-324,"cross_entropy_bits":1e-7,'
            '"js_bits":null,"psi":null,"p_value":null,"threshold_bits":0.05,"significance":0.01,'
            '"drift":false,"top_bins":[{"bin":"[1e16, +inf)","window_p":1.0,"baseline_q":0.5,'
            '"contribution_bits":1.0}],"baseline_id":"3e5","decision":null,'
            '"p_value_above_threshold":null,"q_value":null,"bins":null,"counts":null,'
            '"baseline_q":null,"other_values":[{"value":"\\n","count":1}],"missing_share":null,'
            '"baseline_missing_share":null,"missing_p_value":null,"missing_drift":null}'
        ).encode()
    )


def test_a_version_1_report_is_written_with_the_newer_fields_null() -> None:
    version_1 = (
        '{"schema_version": 1, "pipeline": "p", "key": null, "feature": "f", '
        '"window_start": "2024-01-01T00:00:00Z", "window_end": "2024-01-01T00:10:00Z", '
        '"revision": 0, "count": 0, "missing": 0, "invalid": 0, "kl_bits": null, '
        '"kl_bits_debiased": null, "entropy_bits": null, "cross_entropy_bits": null, '
        '"js_bits": null, "psi": null, "p_value": null, "threshold_bits": 0.05, '
        '"significance": 0.01, "drift": false, "top_bins": [], "baseline_id": "b1"}'
    )

    wire = DriftReport.from_json_bytes(version_1).to_json_bytes()

    assert wire.endswith(
        b'"baseline_id":"b1","decision":null,"p_value_above_threshold":null,"q_value":null,'
        b'"bins":null,"counts":null,"baseline_q":null,"other_values":null,"missing_share":null,'
        b'"baseline_missing_share":null,"missing_p_value":null,"missing_drift":null}'
    )
    assert wire.startswith(b'{"schema_version":1,"record":"feature","pipeline":"p","key":null,')
