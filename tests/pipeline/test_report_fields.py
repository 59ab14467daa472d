"""Report version 2 on real reports (kldrift replay on Prism): every new field recomputed here from
the events themselves with numpy/scipy; the published JSON Schema validates them; version-1
reports still parse."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from _oracle import p_above_threshold, williams
from scipy.stats import chi2, chi2_contingency

from kldrift.local.runners import local_runner_args
from kldrift.pipeline.replay import run_replay
from kldrift.schemas import Baseline, FeatureBaseline, PipelineConfig
from kldrift.schemas.report import SCHEMA_VERSION, DriftReport
from kldrift.synthetic import COUNTRIES, LATENCY_EDGES, SyntheticStream

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))
T0 = 1_700_000_400.0  # a multiple of 60 s
SMOOTHING, THRESHOLD, SIGNIFICANCE = 0.5, 0.05, 0.01
AMOUNT_EDGES = [10.0, 20.0, 40.0, 80.0]
DEVICES = ["ios", "android"]  # web falls into __other__
CONFIG = PipelineConfig.model_validate(
    {
        "name": "fields",
        "event_time_field": "ts",
        "key_field": "model",
        "window": {"size": "2m", "period": "1m"},
        "features": [
            {"name": "latency_ms", "kind": "numeric", "edges": LATENCY_EDGES},
            {"name": "amount", "kind": "numeric", "edges": AMOUNT_EDGES},
            {"name": "payload.country", "kind": "categorical", "categories": COUNTRIES[:4]},
            {"name": "device", "kind": "categorical", "categories": DEVICES},
        ],
        "drift": {
            "smoothing": SMOOTHING,
            "threshold_bits": THRESHOLD,
            "significance": SIGNIFICANCE,
        },
    }
)


def _value(event: dict[str, Any], name: str) -> Any:
    for part in name.split("."):
        event = event.get(part) if isinstance(event, dict) else None  # type: ignore[assignment]
    return event


def _histogram(events: list[dict], name: str) -> tuple[np.ndarray, int, int]:
    """(count per bin, missing, invalid) by the README's binning rules, written out here."""
    spec = CONFIG.feature(name)
    values = [_value(e, name) for e in events]
    missing = sum(v is None for v in values)
    if spec.kind == "numeric":
        edges = np.array(spec.edges)
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        invalid = len(values) - missing - len(numbers)
        bins = np.searchsorted(edges, numbers, side="right")
        return np.bincount(bins, minlength=len(edges) + 1), missing, invalid
    categories = list(spec.categories or [])
    texts = [_text(v) for v in values if isinstance(v, str | int)]  # bool is an int
    invalid = len(values) - missing - len(texts)
    index = [categories.index(v) if v in categories else len(categories) for v in texts]
    return np.bincount(index, minlength=len(categories) + 1), missing, invalid


def _labels(name: str) -> list[str]:
    """README: numeric (-inf, e0), [e0, e1), ..., [e(m-1), +inf); categorical, then __other__."""
    spec = CONFIG.feature(name)
    if spec.kind == "categorical":
        return [*(spec.categories or []), "__other__"]
    edges = [f"{e:g}" for e in spec.edges or []]
    inner = [f"[{a}, {b})" for a, b in itertools.pairwise(edges)]
    return [f"(-inf, {edges[0]})", *inner, f"[{edges[-1]}, +inf)"]


def _text(value: str | int) -> str:
    """README: integers and booleans are compared as text (7 -> "7", true -> "true")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _other_values(events: list[dict], name: str) -> list[dict] | None:
    """README: categorical features name the 5 most frequent raw values in __other__ (ties by
    value), integers and booleans as text; numeric features have none."""
    spec = CONFIG.feature(name)
    if spec.kind == "numeric":
        return None
    values = [_value(event, name) for event in events]
    texts = [_text(v) for v in values if isinstance(v, str | int)]
    texts = [t for t in texts if t not in (spec.categories or [])]
    ranked = sorted(Counter(texts).items(), key=lambda item: (-item[1], item[0]))
    return [{"value": v, "count": c} for v, c in ranked[:5]]


def _events(count: int, seed: int, drift_at: float | None) -> list[dict]:
    stream = SyntheticStream(start=T0, duration=count / 10, rate=10, drift_at=drift_at, seed=seed)
    events = list(stream.events())
    rng = np.random.default_rng(seed)
    for event in events:  # some values missing or of the wrong type, more of them after drift
        late = drift_at is not None and event["ts"] >= drift_at
        if rng.random() < (0.15 if late else 0.03):
            event["latency_ms"] = None
        if rng.random() < 0.02:
            event["amount"] = "n/a"
        if rng.random() < 0.05:  # countries not listed: __other__, named in the report
            event["payload"]["country"] = str(rng.choice(["MX", "JP", "IN", "KR", "ZA", "AR"]))
        if rng.random() < 0.02:  # an integer and a boolean are compared as text
            event["device"] = [7, True][int(rng.integers(2))]
    return events


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict], Baseline]:
    folder = tmp_path_factory.mktemp("fields")
    training = _events(6000, seed=11, drift_at=None)
    features = []
    for spec in CONFIG.features:
        counts, missing, invalid = _histogram(training, spec.name)
        features.append(
            FeatureBaseline(
                name=spec.name,
                kind=spec.kind,
                edges=getattr(spec, "edges", None),
                categories=getattr(spec, "categories", None),
                counts=[int(c) for c in counts],
                missing=missing,
                invalid=invalid,
            )
        )
    baseline = Baseline.create(features, source="test", created_at="2026-12-01T00:00:00Z")
    events = _events(3000, seed=12, drift_at=T0 + 150)
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    run_replay(
        CONFIG,
        baseline,
        str(path),
        str(folder / "reports.jsonl"),
        beam_args=local_runner_args([]),
    )
    lines = (folder / "reports.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], events, baseline


def _benjamini_hochberg(p_values: list[float]) -> list[float]:
    """q_(i) = min over j >= i of p_(j) m / j, capped at 1 (sorted ascending, 1-based ranks)."""
    order = np.argsort(p_values)
    ranked = np.array(p_values)[order] * len(p_values) / np.arange(1, len(p_values) + 1)
    q_sorted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    q = np.empty(len(p_values))
    q[order] = q_sorted
    return list(q)


def test_every_new_field_matches_an_independent_computation(
    scored: tuple[list[dict], list[dict], Baseline],
) -> None:
    reports, events, baseline = scored
    assert len(reports) > 40 and all(
        r["schema_version"] == 3 and r["record"] == "feature" for r in reports
    )
    times = np.array([e["ts"] for e in events])
    checked_above = 0
    for report in reports:
        start = _epoch(report["window_start"])
        in_window = [
            e
            for e, t in zip(events, times, strict=True)
            if start <= t < start + 120 and e["model"] == report["key"]
        ]
        counts, missing, invalid = _histogram(in_window, report["feature"])
        stored = baseline.feature(report["feature"])
        b = np.array(stored.counts, dtype=float)
        assert report["counts"] == [int(c) for c in counts]
        assert (report["missing"], report["invalid"]) == (missing, invalid)
        assert report["bins"] == _labels(report["feature"])
        assert report["other_values"] == _other_values(in_window, report["feature"])
        q = (b + SMOOTHING) / (b.sum() + len(b) * SMOOTHING)
        assert report["baseline_q"] == pytest.approx(list(q), rel=1e-12)
        events_total = counts.sum() + missing + invalid
        assert report["missing_share"] == pytest.approx((missing + invalid) / events_total)
        base_unusable = stored.missing + stored.invalid
        base_total = b.sum() + base_unusable
        assert report["baseline_missing_share"] == pytest.approx(base_unusable / base_total)
        two_by_two = np.array(
            [[counts.sum(), missing + invalid], [b.sum(), base_unusable]], dtype=float
        )
        if two_by_two[:, 1].sum() == 0:
            assert report["missing_p_value"] == 1.0
        else:
            g2 = chi2_contingency(two_by_two, correction=False, lambda_="log-likelihood").statistic
            missing_p = chi2.sf(g2 / williams(two_by_two), 1)
            assert report["missing_p_value"] == pytest.approx(missing_p, rel=1e-9, abs=1e-300)
            rose = (missing + invalid) / events_total > base_unusable / base_total
            assert report["missing_drift"] == bool(rose and missing_p < SIGNIFICANCE)
        occupied = (counts + b) > 0
        table = np.array([counts[occupied], b[occupied]], dtype=float)
        g = chi2_contingency(table, correction=False, lambda_="log-likelihood").statistic
        g /= williams(table)
        expected_above = p_above_threshold(counts[occupied], b[occupied], g, THRESHOLD, SMOOTHING)
        assert report["p_value"] == pytest.approx(chi2.sf(g, occupied.sum() - 1), rel=1e-9)
        assert report["p_value_above_threshold"] == pytest.approx(expected_above, rel=1e-7)
        assert report["decision"] == "estimate"
        checked_above += expected_above < 0.5
    assert checked_above > 5  # some windows well above the threshold were among them
    countries = [r["other_values"] for r in reports if r["feature"] == "payload.country"]
    assert any(len(named) == 5 for named in countries)  # more than 5 raw values: the top 5
    devices = [v["value"] for r in reports if r["feature"] == "device" for v in r["other_values"]]
    assert {"7", "true", "web"} <= set(devices)
    # The drift put latency values out (missing) more often: the missing-share test sees it.
    assert any(r["missing_drift"] for r in reports if r["feature"] == "latency_ms")
    assert not any(r["missing_drift"] for r in reports if _epoch(r["window_end"]) <= T0 + 150)


def test_q_values_are_benjamini_hochberg_over_the_features_of_a_window(
    scored: tuple[list[dict], list[dict], Baseline],
) -> None:
    reports, _, _ = scored
    groups: dict[tuple, list[dict]] = {}
    for report in reports:
        groups.setdefault((report["key"], report["window_start"], report["revision"]), []).append(
            report
        )
    assert {len(g) for g in groups.values()} == {4}
    for group in groups.values():
        expected = _benjamini_hochberg([r["p_value"] for r in group])
        assert [r["q_value"] for r in group] == pytest.approx(expected, rel=1e-12)


def test_the_published_schema_validates_real_reports_and_version_1_ones(
    scored: tuple[list[dict], list[dict], Baseline],
) -> None:
    printed = subprocess.run(
        [KLDRIFT, "report-schema"], capture_output=True, text=True, timeout=60, check=True
    )
    schema = json.loads(printed.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    reports, _, _ = scored
    for report in reports:
        validator.validate(report)
    validator.validate(json.loads(VERSION_1_REPORT))
    broken = {**reports[0], "counts": ["seven"]}
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


# A report exactly as version 1 wrote it (README of December 2026, before report version 2).
VERSION_1_REPORT = """{"schema_version": 1, "pipeline": "checkout-model", "key": "model-a",
 "feature": "latency_ms", "window_start": "2026-11-25T09:45:00Z",
 "window_end": "2026-11-25T09:47:00Z", "revision": 0, "count": 40, "missing": 0, "invalid": 0,
 "kl_bits": 0.18872187554086717, "kl_bits_debiased": 0.1634747123253103,
 "entropy_bits": 0.8112781244591328, "cross_entropy_bits": 1.0, "js_bits": 0.048794940695398505,
 "psi": 0.2600857137682654, "p_value": 0.005843238249692533, "threshold_bits": 0.05,
 "significance": 0.01, "drift": true, "top_bins": [{"bin": "[0, 10)", "window_p": 0.75,
 "baseline_q": 0.5, "contribution_bits": 0.43872187554086717}], "baseline_id": "4df5f0ef5801"}"""


def test_a_version_1_report_still_parses_with_the_new_fields_null() -> None:
    report = DriftReport.from_json_bytes(VERSION_1_REPORT)
    assert report.schema_version == 1 and SCHEMA_VERSION == 3 and report.record == "feature"
    assert report.p_value == 0.005843238249692533 and report.drift is True
    for field in ("p_value_above_threshold", "q_value", "counts", "bins", "other_values"):
        assert getattr(report, field) is None
    assert report.missing_drift is None
    assert report.message_key.startswith("checkout-model|model-a|latency_ms|")


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_baseline_that_does_not_count_missing_values_gives_null_missing_fields() -> None:
    from datetime import UTC, datetime

    from kldrift.binning import resolve_bins
    from kldrift.schemas.baseline import parse_baseline
    from kldrift.scoring import feature_references, window_reports

    config = PipelineConfig.model_validate(
        {**CONFIG.model_dump(mode="json"), "features": [CONFIG.features[0].model_dump()]}
    )
    feature = {"name": "latency_ms", "kind": "numeric", "edges": LATENCY_EDGES}
    counts = [1, 10, 20, 30, 20, 10, 5, 3, 1]
    from kldrift.schemas.baseline import content_id

    id_ = content_id([FeatureBaseline(**feature, counts=counts)])
    # Written by hand, without `missing` and `invalid`: it loads (its id is that of zeros)...
    text = json.dumps(
        {
            "id": id_,
            "created_at": "x",
            "source": "hand",
            "features": [{**feature, "counts": counts}],
        }
    )
    baseline = parse_baseline(text, "hand.json")
    references = feature_references(resolve_bins(config, baseline), baseline, SMOOTHING)
    window = np.array([*counts, 40, 0])  # 40 missing values in the window
    (report,) = window_reports(
        pipeline="p",
        key=None,
        window_start=datetime(2026, 1, 1, tzinfo=UTC),
        window_end=datetime(2026, 1, 1, 0, 2, tzinfo=UTC),
        revision=0,
        counts=window,
        slots=[("latency_ms", 0, 11)],
        references=references,
        drift_spec=config.drift,
        baseline_id=baseline.id,
    )
    # ...but its missing share is unknown: no test, no flag.
    assert report.missing_share == pytest.approx(40 / 140)
    assert report.baseline_missing_share is None and report.missing_p_value is None
    assert report.missing_drift is False


def test_decision_confident_sets_drift_from_the_minimum_effect_test() -> None:
    from datetime import UTC, datetime

    from kldrift.schemas.config import DriftSpec
    from kldrift.scoring import FeatureReference, window_reports

    b = np.array([500.0, 300.0, 200.0])
    reference = FeatureReference(
        name="x",
        labels=("a", "b", "__other__"),
        counts=b,
        q=(b + 0.5) / (b.sum() + 1.5),
        unusable=0,
        categorical=True,
    )
    reports = {}
    # The same shares, KL = 0.7 log2(1.4) + 0.1 log2(1/3) = 0.18 bits (3.6 x threshold): N decides.
    for window in ([70, 10, 20], [700, 100, 200]):
        for decision in ("estimate", "confident"):
            (report,) = window_reports(
                pipeline="p",
                key="k",
                window_start=datetime(2026, 1, 1, tzinfo=UTC),
                window_end=datetime(2026, 1, 1, 0, 2, tzinfo=UTC),
                revision=0,
                counts=np.array([*window, 0, 0]),
                slots=[("x", 0, 5)],
                references=[reference],
                drift_spec=DriftSpec(decision=decision),  # type: ignore[arg-type]
                baseline_id="b",
            )
            assert report.decision == decision
            if decision == "confident":
                assert report.drift == (report.p_value_above_threshold < 0.01)
            else:
                assert report.drift == (report.kl_bits_debiased > 0.05 and report.p_value < 0.01)
            reports[sum(window), decision] = report.drift
    # 100 events: the estimate flags, the minimum-effect test cannot yet; 1,000 events: both flag.
    assert reports == {
        (100, "estimate"): True,
        (100, "confident"): False,
        (1000, "estimate"): True,
        (1000, "confident"): True,
    }
