"""Joint features on real replays (Prism): drift in how two features go together, which neither
feature's own report shows, and the window summary over all of a window's features.

The stream: events of `country` (de, fr) and `latency_ms` (fast < 100 ms <= slow), 200 a minute.
The baseline pairs de with fast and fr with slow (80/20); after FLIP_AT the pairing flips (20/80)
while each window holds exactly 100 de and 100 fr, 100 fast and 100 slow, as the baseline's
marginals do: by construction neither marginal moves. Every joint field is recomputed here on
the flattened (country x latency) table with scipy (tests/_oracle.py); the summary's combined
p-value from the reports as Liu & Xie write it, with scipy's Cauchy distribution.
"""

from __future__ import annotations

import json
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _jobs import run_cli
from _oracle import expected_fields
from scipy.stats import cauchy, false_discovery_control

from kldrift import baseline_from_events
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.replay import run_replay
from kldrift.schemas import PipelineConfig
from kldrift.schemas.config import load_config

T0 = 1_735_689_600  # 2025-01-01T00:00:00Z, a whole minute
MINUTES, FLIP_AT_MINUTE = 10, 5
SMOOTHING, THRESHOLD, SIGNIFICANCE = 0.5, 0.05, 0.01
COUNTRIES, FAST_BELOW_MS = ["de", "fr"], 100.0
CONFIG_DATA: dict[str, Any] = {
    "name": "joint",
    "event_time_field": "ts",
    "window": {"size": "2m", "period": "1m"},
    "features": [
        {"name": "country", "kind": "categorical", "categories": COUNTRIES},
        {"name": "latency_ms", "kind": "numeric", "edges": [FAST_BELOW_MS]},
        {"name": "latency_by_country", "kind": "joint", "of": ["country", "latency_ms"]},
    ],
    "drift": {"smoothing": SMOOTHING, "threshold_bits": THRESHOLD, "significance": SIGNIFICANCE},
}
CONFIG = PipelineConfig.model_validate(CONFIG_DATA)
# Events per minute of each (country, fast?) pair: the baseline's association, then flipped.
PAIRED = {("de", True): 80, ("de", False): 20, ("fr", True): 20, ("fr", False): 80}
FLIPPED = {("de", True): 20, ("de", False): 80, ("fr", True): 80, ("fr", False): 20}


def _events(minute: int, pairs: dict[tuple[str, bool], int], rng: random.Random) -> list[dict]:
    events = []
    for (country, fast), count in pairs.items():
        for _ in range(count):
            latency = rng.uniform(1, 99) if fast else rng.uniform(100, 900)
            ts = T0 + 60 * minute + rng.uniform(0, 59.999)
            events.append({"ts": ts, "country": country, "latency_ms": latency})
    rng.shuffle(events)
    return events


def _cell(event: dict) -> int:
    """The joint cell README documents: country bin (de, fr, __other__) x latency bin
    ((-inf, 100), [100, +inf)), the first part varying slowest."""
    country = COUNTRIES.index(event["country"])
    return country * 2 + (event["latency_ms"] >= FAST_BELOW_MS)


def _table(events: list[dict]) -> np.ndarray:
    return np.bincount([_cell(e) for e in events], minlength=6).astype(float)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("joint")
    rng = random.Random(26)
    training = [e for minute in range(20) for e in _events(minute, PAIRED, rng)]
    baseline = baseline_from_events(CONFIG, training)
    events = [
        e
        for minute in range(MINUTES)
        for e in _events(minute, PAIRED if minute < FLIP_AT_MINUTE else FLIPPED, rng)
    ]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    run_replay(
        CONFIG,
        baseline,
        str(folder / "events.jsonl"),
        str(folder / "reports.jsonl"),
        beam_args=local_runner_args([]),
        summary_output=str(folder / "summaries.jsonl"),
    )
    # Without --summaries Score computes none: the reports must not change by a byte.
    run_replay(
        CONFIG,
        baseline,
        str(folder / "events.jsonl"),
        str(folder / "reports-alone.jsonl"),
        beam_args=local_runner_args([]),
    )
    return {
        "reports_bytes": (folder / "reports.jsonl").read_bytes(),
        "reports_alone_bytes": (folder / "reports-alone.jsonl").read_bytes(),
        "training": training,
        "events": events,
        "baseline": baseline,
        "reports": [json.loads(x) for x in (folder / "reports.jsonl").read_text().splitlines()],
        "summaries": [json.loads(x) for x in (folder / "summaries.jsonl").read_text().splitlines()],
    }


def _minute(text: str) -> int:
    return round((datetime.fromisoformat(text).timestamp() - T0) / 60)


def _phase(report: dict) -> str:
    """Windows wholly before the flip, wholly after it, or holding both."""
    start, end = _minute(report["window_start"]), _minute(report["window_end"])
    if end <= FLIP_AT_MINUTE:
        return "paired"
    return "flipped" if start >= FLIP_AT_MINUTE else "mixed"


def test_the_baseline_counts_the_joint_cells_in_the_same_pass(replayed: dict) -> None:
    joint = replayed["baseline"].feature("latency_by_country")
    assert joint.kind == "joint" and joint.of == ["country", "latency_ms"]
    assert joint.counts == [int(c) for c in _table(replayed["training"])]
    assert joint.counts == [1600, 400, 400, 1600, 0, 0]


def test_the_joint_flags_the_flipped_association_and_neither_marginal_does(
    replayed: dict,
) -> None:
    reports = replayed["reports"]
    by_phase: dict[tuple[str, str], list[dict]] = {}
    for report in reports:
        by_phase.setdefault((_phase(report), report["feature"]), []).append(report)
    marginals = [r for r in reports if r["feature"] != "latency_by_country"]
    # Every window holds 100 de / 100 fr and 100 fast / 100 slow events per minute: the marginal
    # histograms equal the baseline's shares exactly, before and after the flip.
    assert all(r["counts"][:2] == [r["count"] // 2] * 2 for r in marginals)
    assert not any(r["drift"] for r in marginals)
    assert min(r["p_value"] for r in marginals) > 0.5
    assert not any(r["drift"] for r in by_phase[("paired", "latency_by_country")])
    flipped = by_phase[("flipped", "latency_by_country")]
    assert len(flipped) == MINUTES - FLIP_AT_MINUTE
    assert all(r["drift"] and r["p_value"] < 1e-12 for r in flipped)
    assert all(r["kl_bits_debiased"] > 1.0 for r in flipped)


def test_every_joint_field_equals_scipy_on_the_flattened_table(replayed: dict) -> None:
    baseline = np.array(replayed["baseline"].feature("latency_by_country").counts, dtype=float)
    times = np.array([e["ts"] for e in replayed["events"]])
    joints = [r for r in replayed["reports"] if r["feature"] == "latency_by_country"]
    assert len(joints) == MINUTES + 1  # 2-minute windows every minute, both ends included
    for report in joints:
        start = datetime.fromisoformat(report["window_start"]).timestamp()
        window = [
            e for e, t in zip(replayed["events"], times, strict=True) if start <= t < start + 120
        ]
        counts = _table(window)
        assert report["counts"] == [int(c) for c in counts]
        assert report["bins"] == [
            f"{c} & {latency}"
            for c in [*COUNTRIES, "__other__"]
            for latency in ("(-inf, 100)", "[100, +inf)")
        ]
        q = (baseline + SMOOTHING) / (baseline.sum() + 6 * SMOOTHING)
        assert report["baseline_q"] == pytest.approx(list(q), rel=1e-12)
        expected = expected_fields(counts, baseline, smoothing=SMOOTHING, threshold=THRESHOLD)
        for field in ("kl_bits", "entropy_bits", "cross_entropy_bits", "kl_bits_debiased"):
            assert report[field] == pytest.approx(expected[field], rel=1e-12, abs=1e-15), field
        assert report["p_value"] == pytest.approx(expected["p_value"], rel=1e-9, abs=1e-300)
        assert report["p_value_above_threshold"] == pytest.approx(
            expected["p_value_above_threshold"], rel=1e-7, abs=1e-300
        )
        estimate = expected["kl_bits_debiased"] > THRESHOLD and expected["p_value"] < SIGNIFICANCE
        assert report["drift"] == estimate


def _cauchy(p_values: list[float]) -> float:
    """Liu & Xie's combination as they write it, p-values above 0.99 taken as 0.99: the mean of
    tan((0.5 - p) pi), then the standard Cauchy's survival function (scipy)."""
    t = np.mean([np.tan((0.5 - min(p, 0.99)) * np.pi) for p in p_values])
    return float(cauchy.sf(t))


def test_one_summary_per_window_combines_its_features(replayed: dict) -> None:
    by_window: dict[str, list[dict]] = {}
    for report in replayed["reports"]:
        by_window.setdefault(report["window_start"], []).append(report)
    summaries = {s["window_start"]: s for s in replayed["summaries"]}
    assert len(replayed["summaries"]) == len(summaries) == len(by_window) == MINUTES + 1
    for start, reports in by_window.items():
        summary = summaries[start]
        p_values = [r["p_value"] for r in reports]
        assert summary["record"] == "window_summary" and summary["schema_version"] == 3
        assert summary["events"] == reports[0]["count"]
        assert (summary["features"], summary["features_checked"]) == (3, 3)
        # scipy's 0.5 - arctan(t)/pi cancels for large t: exact to ~1e-16 absolute only.
        assert summary["combined_p_value"] == pytest.approx(_cauchy(p_values), rel=1e-9, abs=1e-15)
        q_values = false_discovery_control(p_values, method="bh")
        assert summary["min_q_value"] == pytest.approx(min(q_values), rel=1e-12)
        drifted = [r["feature"] for r in reports if r["drift"]]
        assert sorted(summary["features_drifted"]) == sorted(drifted)
        assert summary["drift"] == (bool(drifted) and _cauchy(p_values) < SIGNIFICANCE)
        assert summary["drift"] == (_phase(reports[0]) != "paired"), start


def test_config_check_and_replay_cli_accept_a_joint_of_learned_bins(tmp_path: Path) -> None:
    """`kldrift baseline` learns the parts' bins (quantile edges, top_k) and counts the joint
    with them in the same job; the joint's cells are what this test counts by hand."""
    data = {
        **CONFIG_DATA,
        "features": [
            {"name": "country", "kind": "categorical", "top_k": 2},
            {"name": "latency_ms", "kind": "numeric", "bins": 2},
            {"name": "latency_by_country", "kind": "joint", "of": ["country", "latency_ms"]},
        ],
    }
    config_path = tmp_path / "joint.json"
    config_path.write_text(json.dumps(data))
    rng = random.Random(7)
    training = [e for minute in range(3) for e in _events(minute, PAIRED, rng)]
    training += [{"ts": T0, "country": "it", "latency_ms": None}]  # missing in one part
    (tmp_path / "training.jsonl").write_text("".join(json.dumps(e) + "\n" for e in training))
    built = run_cli(
        "baseline",
        "--config",
        str(config_path),
        "--input",
        str(tmp_path / "training.jsonl"),
        "--output",
        str(tmp_path / "baseline.json"),
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "latency_by_country: 6 bins" in built.stdout
    stored = json.loads((tmp_path / "baseline.json").read_text())
    features = {f["name"]: f for f in stored["features"]}
    [edge] = features["latency_ms"]["edges"]  # the median: between the fast and slow halves
    assert features["country"]["categories"] == ["de", "fr"]
    cells = np.zeros(6, dtype=int)
    for event in training[:-1]:
        cells[COUNTRIES.index(event["country"]) * 2 + (event["latency_ms"] >= edge)] += 1
    assert features["latency_by_country"]["counts"] == cells.tolist()
    assert features["latency_by_country"]["missing"] == 1
    config = load_config(config_path)
    assert config.feature("latency_by_country").kind == "joint"


def test_a_replay_without_summaries_writes_the_same_reports(replayed: dict[str, Any]) -> None:
    assert replayed["summaries"], "the replay with --summaries wrote some"
    assert replayed["reports_alone_bytes"] == replayed["reports_bytes"]
