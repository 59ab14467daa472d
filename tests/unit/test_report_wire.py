"""The msgspec records the job writes (kldrift.schemas.report_wire) against the pydantic models that
are the report topic's contract: the same windows scored both ways give the same JSON, field by
field and in the same order (here byte for byte: no float reaches 1e16), each parses back as the
model, and the two JSON Schemas have the same fields, required fields and value types."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import pytest

from kldrift import baseline_from_events, parse_config
from kldrift.binning import resolve_bins
from kldrift.schemas.report import DriftReport, WindowSummary
from kldrift.schemas.report_wire import DriftReportWire, WindowSummaryWire
from kldrift.scoring import (
    WindowCounts,
    WindowRows,
    feature_references,
    rows_reports,
    window_summary,
    windows_reports,
)
from kldrift.transforms.bin import feature_slots

pytestmark = pytest.mark.unit

START = datetime(2024, 1, 1, tzinfo=UTC)


def _config(decision: str) -> Any:
    return parse_config(
        {
            "name": "shop",
            "event_time_field": "ts",
            "key_field": "model",
            "window": {"size": "10m", "period": "5m"},
            "drift": {"decision": decision},
            "features": [
                {"name": "latency_ms", "kind": "numeric", "edges": [10.0, 50.0, 200.0]},
                {"name": "country", "kind": "categorical", "categories": ["de", "fr"]},
            ],
        }
    )


def _windows(slots: int, rng: np.random.Generator) -> list[WindowCounts]:
    windows = []
    for w in range(40):
        counts = rng.integers(0, 30, size=slots)
        if w % 7 == 0:
            counts[:] = 0  # an empty window: nulls where nothing was binned
            counts[5] = 4  # (missing values only)
        others = {"country": Counter({"br": 3, "it\u00e9": 1})} if w % 3 == 0 else {}
        windows.append(
            WindowCounts(
                key=None if w % 5 == 0 else f"model-{w % 4}",
                window_start=START + timedelta(minutes=5 * w),
                window_end=START + timedelta(minutes=5 * w + 10),
                revision=w % 3,
                counts=counts.astype(np.int64),
                other_values=others,
            )
        )
    return windows


def _scoring_inputs(decision: str) -> tuple[Any, Any, Any, list[WindowCounts]]:
    """(config, baseline, slots, windows) of the tests below."""
    config = _config(decision)
    rng = np.random.default_rng(27)
    events = [
        {"latency_ms": float(x), "country": c}
        for x, c in zip(rng.gamma(2.0, 40.0, 500), rng.choice(["de", "fr", "es"], 500), strict=True)
    ]
    baseline = baseline_from_events(config, events)
    slots = feature_slots(resolve_bins(config, baseline))
    return config, baseline, slots, _windows(slots[-1][2], rng)


def _scored(decision: str, wire: bool) -> tuple[Any, list[list[Any]]]:
    """(config, each window's reports) of the tests below, as the job's msgspec records (`wire`)
    or as the pydantic models."""
    config, baseline, slots, windows = _scoring_inputs(decision)
    reports = windows_reports(
        pipeline="shop",
        windows=windows,
        slots=slots,
        references=feature_references(
            resolve_bins(config, baseline), baseline, config.drift.smoothing
        ),
        drift_spec=config.drift,
        baseline_id=baseline.id,
        wire=wire,
    )
    return config, reports


@pytest.mark.parametrize("decision", ["estimate", "confident"])
def test_the_job_s_records_write_the_models_json(decision: str) -> None:
    config = _scoring_inputs(decision)[0]
    scored = {wire: _scored(decision, wire)[1] for wire in (False, True)}
    checked = 0
    for models, records in zip(scored[False], scored[True], strict=True):
        for model, record in zip(models, records, strict=True):
            assert type(model) is DriftReport and type(record) is DriftReportWire
            _assert_same_json(model.to_json_bytes(), record.to_json_bytes())
            assert record.message_key == model.message_key
            assert record.to_model() == model
            checked += 1
        summary, summary_record = (
            window_summary(models, config.drift),
            window_summary(records, config.drift),
        )
        assert type(summary) is WindowSummary and type(summary_record) is WindowSummaryWire
        _assert_same_json(summary.to_json_bytes(), summary_record.to_json_bytes())
        assert summary_record.message_key == summary.message_key
        assert summary_record.to_model() == summary
    assert checked == 80
    nulls = [r for rs in scored[True] for r in rs if r.kl_bits is None]
    assert nulls, "the empty windows' nulls were compared too"


@pytest.mark.parametrize("decision", ["estimate", "confident"])
def test_the_job_s_columns_give_each_window_s_reports_and_summary(decision: str) -> None:
    """What Score writes (rows_reports: every window's records from windows x features columns)
    is, window by window, the JSON of the pydantic reports of that window and of the summary
    window_summary builds from those reports."""
    config, baseline, slots, windows = _scoring_inputs(decision)
    scoring = {
        "slots": slots,
        "references": feature_references(
            resolve_bins(config, baseline), baseline, config.drift.smoothing
        ),
        "drift_spec": config.drift,
        "baseline_id": baseline.id,
    }
    records, summaries = rows_reports(pipeline="shop", rows=WindowRows.of(windows), **scoring)
    models = windows_reports(pipeline="shop", windows=windows, **scoring)
    features = len(slots)
    assert len(records) == len(windows) * features and len(summaries) == len(windows)
    for i, window_models in enumerate(models):
        window_records = records[i * features : (i + 1) * features]
        assert [r.to_json_bytes() for r in window_records] == [
            m.to_json_bytes() for m in window_models
        ]
        expected = window_summary(window_models, config.drift)
        assert summaries[i].to_json_bytes() == expected.to_json_bytes()
    assert {s.drift for s in summaries} == {True, False}  # both verdicts were compared


def _assert_same_json(model_json: bytes, record_json: bytes) -> None:
    parsed_model, parsed_record = json.loads(model_json), json.loads(record_json)
    assert list(parsed_record) == list(parsed_model)  # the same fields in the same order
    for field, value in parsed_model.items():
        assert parsed_record[field] == value, field
    assert record_json == model_json


def test_a_float_of_1e16_and_more_differs_only_in_its_text() -> None:
    model = DriftReport.model_validate_json(_one_report_json(threshold_bits=1e16))
    record = msgspec.json.decode(model.to_json_bytes(), type=DriftReportWire)
    assert record.to_model() == model
    assert b'"threshold_bits":1e16' in record.to_json_bytes()
    assert b'"threshold_bits":1e+16' in model.to_json_bytes()


def _one_report_json(threshold_bits: float) -> bytes:
    report = {
        "pipeline": "shop",
        "key": "model-a",
        "feature": "latency_ms",
        "window_start": "2024-01-01T00:00:00Z",
        "window_end": "2024-01-01T00:10:00Z",
        "revision": 0,
        "count": 10,
        "missing": 0,
        "invalid": 0,
        "kl_bits": 0.25,
        "kl_bits_debiased": 0.2,
        "entropy_bits": 1.0,
        "cross_entropy_bits": 1.25,
        "js_bits": 0.05,
        "psi": 0.2,
        "p_value": 0.01,
        "threshold_bits": threshold_bits,
        "significance": 0.01,
        "drift": False,
        "top_bins": [{"bin": "<10", "window_p": 0.5, "baseline_q": 0.25, "contribution_bits": 0.5}],
        "baseline_id": "b1",
        "other_values": [{"value": "br", "count": 2}],
    }
    return json.dumps(report).encode()


@pytest.mark.parametrize(
    ("model", "record"), [(DriftReport, DriftReportWire), (WindowSummary, WindowSummaryWire)]
)
def test_the_json_schemas_have_the_same_fields_and_types(model: Any, record: Any) -> None:
    model_schema = model.model_json_schema()
    (record_schema,), definitions = msgspec.json.schema_components([record])
    record_schema = definitions[record.__name__]
    assert list(record_schema["properties"]) == list(model_schema["properties"])
    # DriftReportWire is built positionally: its first two fields have no default (the model's
    # are the schema version and "feature"); every record it writes has them.
    positional = {"schema_version", "record"} if record is DriftReportWire else set()
    required = set(model_schema.get("required", []))
    assert set(record_schema.get("required", [])) == required | positional
    assert not positional & required
    model_defs = model_schema.get("$defs", {})
    for field, spec in model_schema["properties"].items():
        want = _types(spec, model_defs)
        got = _types(record_schema["properties"][field], definitions)
        assert got == want, field


def _types(spec: dict, definitions: dict) -> Any:
    """A property's JSON types, references resolved, nested objects by their fields and types."""
    if "$ref" in spec:
        target = definitions[spec["$ref"].rsplit("/", 1)[-1]]
        return (
            "object",
            tuple((k, _types(v, definitions)) for k, v in target["properties"].items()),
        )
    if "anyOf" in spec:
        return frozenset(_types(option, definitions) for option in spec["anyOf"])
    if "const" in spec or "enum" in spec:
        return ("enum", frozenset(spec.get("enum", [spec.get("const")])))
    kind = spec["type"]
    if kind == "array":
        return ("array", _types(spec["items"], definitions))
    if kind == "string" and spec.get("format") == "date-time":
        return "date-time"
    return kind


@pytest.mark.parametrize("decision", ["estimate", "confident"])
def test_records_cross_the_runner_unchanged(decision: str) -> None:
    """Score's report and summary lists go through Beam's coder for their type hints (the
    typed MessagePack of kldrift.transforms.report_coder): every record decodes equal, field by
    field, and writes the same JSON bytes; the size estimate grows with the bins."""
    from apache_beam import coders, typehints

    from kldrift.transforms import report_coder

    config, scored = _scored(decision, wire=True)
    reports = [record for records in scored for record in records]
    summaries = [window_summary(reports[i : i + 2], config.drift) for i in range(0, 80, 2)]
    for records, record_type in ((reports, DriftReportWire), (summaries, WindowSummaryWire)):
        coder = coders.registry.get_coder(typehints.List[record_type])
        assert isinstance(coder.value_coder(), report_coder._ReportWireCoder)
        decoded = coder.decode(coder.encode(records))
        assert decoded == records
        assert [r.to_json_bytes() for r in decoded] == [r.to_json_bytes() for r in records]
        assert all(type(r) is record_type for r in decoded)
    impl = report_coder.DriftReportWireCoder().get_impl()
    wide = msgspec.structs.replace(reports[0], counts=[0] * 100)
    assert impl.estimate_size(wide) > impl.estimate_size(reports[0]) > 0
