"""`kldrift power` and kldrift.power: simulated flag rates for a baseline, the same decisions as
`divergence.score`, drifted distributions at the KL asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import entropy

from kldrift import divergence
from kldrift.power import (
    MULTIPLES,
    drifted_distribution,
    flag_rates,
    format_power_table,
    operating_characteristic,
    window_sizes_around,
)
from kldrift.schemas import Baseline, FeatureBaseline, PipelineConfig
from kldrift.schemas.config import DriftSpec

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))
CONFIG = {
    "name": "power",
    "event_time_field": "ts",
    "window": {"size": "2m", "period": "30s"},
    "features": [
        {"name": "latency_ms", "kind": "numeric", "edges": [0, 5, 10, 20, 50, 100]},
        {"name": "device", "kind": "categorical", "categories": ["ios", "android", "web"]},
    ],
    "drift": {"threshold_bits": 0.05, "significance": 0.01},
}
BASELINE = Baseline.create(
    [
        FeatureBaseline(
            name="latency_ms",
            kind="numeric",
            edges=[0, 5, 10, 20, 50, 100],
            counts=[0, 1500, 2500, 6000, 7000, 2500, 500],
        ),
        FeatureBaseline(
            name="device",
            kind="categorical",
            categories=["ios", "android", "web"],
            counts=[8000, 8000, 3960, 40],
        ),
    ],
    source="test",
    created_at="2026-12-01T00:00:00Z",
)


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
@pytest.mark.parametrize("target", [0.0, 0.025, 0.05, 0.2])
def test_drifted_distribution_has_the_kl_asked_for(kind: str, target: float) -> None:
    q = np.array([0.02, 0.2, 0.3, 0.3, 0.15, 0.03])
    p, shape = drifted_distribution(q, kind, target)
    assert p.sum() == pytest.approx(1.0, abs=1e-12) and (p >= 0).all()
    assert entropy(p, q, base=2) == pytest.approx(target, abs=1e-10)
    if kind == "categorical" and target > 0:  # only the last bin (__other__) gains
        assert p[-1] > q[-1] and np.all(p[:-1] < q[:-1])
    assert shape in ("location tilt", "mass into __other__")


@pytest.mark.parametrize("decision", ["estimate", "confident"])
def test_vectorised_flags_equal_score_window_by_window(decision: str) -> None:
    rng = np.random.default_rng(5)
    for feature in BASELINE.features:
        baseline = np.array(feature.counts, dtype=float)
        q = divergence.baseline_probabilities(baseline, 0.5)
        truth, _ = drifted_distribution(q, feature.kind, 0.1)
        sample = rng.multinomial(400, truth, size=400)
        spec = DriftSpec(decision=decision)
        vectorised = flag_rates(sample, baseline, spec)[decision]
        one_by_one = [
            divergence.score(
                window,
                baseline,
                smoothing=spec.smoothing,
                threshold_bits=spec.threshold_bits,
                significance=spec.significance,
                labels=[str(i) for i in range(len(baseline))],
                decision=decision,
            ).drift
            for window in sample
        ]
        assert vectorised.tolist() == one_by_one
        assert 0 < vectorised.sum() < len(sample)  # both outcomes occur: the comparison bites


def test_operating_characteristic_covers_every_feature_size_and_multiple() -> None:
    config = PipelineConfig.model_validate(CONFIG)
    table = operating_characteristic(config, BASELINE, 400, windows=500, seed=1)
    assert window_sizes_around(400) == [100, 200, 400, 800, 1600]
    assert len(table.cells) == 2 * 5 * len(MULTIPLES)
    for cell in table.cells:
        q = divergence.baseline_probabilities(
            np.array(BASELINE.feature(cell.feature).counts, float), 0.5
        )
        expected_kl = cell.multiple * 0.05
        assert cell.kl_bits == pytest.approx(expected_kl, abs=1e-9), (q, cell)
        assert set(cell.flag_rate) == {"estimate", "confident"}
    stationary = [c for c in table.cells if c.multiple == 0]
    assert all(c.flag_rate["confident"] <= 0.01 for c in stationary)
    big = [c for c in table.cells if c.multiple == 4 and c.window_events == 1600]
    assert all(c.flag_rate[rule] > 0.9 for c in big for rule in ("estimate", "confident"))
    again = operating_characteristic(config, BASELINE, 400, windows=500, seed=1)
    assert again == table  # seeded
    text = format_power_table(table)
    assert "latency_ms (location tilt)" in text and "device (mass into __other__)" in text
    assert "| 1,600 | confident |" in text and "bits" in text and "%" in text


def test_power_command_prints_the_table_for_a_rate(tmp_path: Path) -> None:
    (tmp_path / "baseline.json").write_text(BASELINE.model_dump_json())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**CONFIG, "baseline": "baseline.json"}))
    done = subprocess.run(
        [KLDRIFT, "power", "--config", str(tmp_path / "config.yaml"), "--events-per-second", "2.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # 2.5 events/s x a 2-minute window = 300 events: rows for 75 ... 1,200
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert {r.split("|")[1].strip() for r in rows if "rule" not in r} == {
        "75",
        "150",
        "300",
        "600",
        "1,200",
    }
    assert "threshold 0.05 bits, significance 0.01" in done.stdout
    bad = subprocess.run(
        [KLDRIFT, "power", "--config", str(tmp_path / "config.yaml"), "--window-events", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--window-events" in bad.stderr


def test_simulated_triggers_count_as_the_watch_policy_fires() -> None:
    from _reports import make_report

    from kldrift.consumer import RetrainTrigger
    from kldrift.power import _k_of_m_triggers

    rng = np.random.default_rng(3)
    flags = rng.random(600) < 0.25
    policy = RetrainTrigger(k=3, m=5, cooldown_s=10 * 60)
    fired = sum(
        policy.offer(make_report(minute, bool(flag))) is not None
        for minute, flag in enumerate(flags, start=1)
    )
    # windows one minute apart: a 10-minute cooldown is 10 windows
    assert _k_of_m_triggers(flags, 3, 5, 10) == fired > 5


def test_false_triggers_per_day_on_a_stationary_stream() -> None:
    from kldrift.power import false_triggers_per_day

    config = PipelineConfig.model_validate(CONFIG)  # 2-minute windows every 30 s
    rows = false_triggers_per_day(config, BASELINE, 0.7, days=2, seed=4)
    assert {(r.feature, r.rule) for r in rows} == {
        (f, rule) for f in ("latency_ms", "device") for rule in ("estimate", "confident")
    }
    for row in rows:
        assert row.windows_per_day == 2880
        assert row.flags_per_day == pytest.approx(row.window_flag_rate * 2880)
        assert row.triggers_per_day <= row.flags_per_day / 3  # each trigger needs 3 flags
        assert row.window_flag_rate <= 0.02  # stationary: about `significance` at most


def test_a_joints_drift_is_an_association_tilt_at_the_kl_asked_for() -> None:
    q = np.outer([0.5, 0.3, 0.2], [0.6, 0.4]).ravel()  # independent parts: 3 x 2 cells
    p, shape = drifted_distribution(q, "joint", 0.1, (3, 2))
    assert shape == "association tilt"
    assert entropy(p, q, base=2) == pytest.approx(0.1, abs=1e-10)
    table = p.reshape(3, 2)
    # The tilt makes the parts go together: the first part's high bins favour the second's high.
    assert table[2, 1] / table[2].sum() > 0.4 > table[0, 1] / table[0].sum()


def test_a_joint_needs_more_events_per_window_than_its_parts() -> None:
    """README: for the same power, a joint of a 7-bin and a 4-bin feature (28 cells) needs more
    events per window than either part (here at twice the threshold, estimate rule)."""
    joint = {"name": "latency_by_device", "kind": "joint", "of": ["latency_ms", "device"]}
    config = PipelineConfig.model_validate({**CONFIG, "features": [*CONFIG["features"], joint]})
    latency, device = (BASELINE.feature(n) for n in ("latency_ms", "device"))
    cells = np.outer(latency.counts, device.counts).ravel() // sum(latency.counts)
    baseline = Baseline.create(
        [
            latency,
            device,
            FeatureBaseline(
                name="latency_by_device",
                kind="joint",
                of=["latency_ms", "device"],
                counts=list(map(int, cells)),
            ),
        ],
        source="test",
        created_at="2026-12-01T00:00:00Z",
    )
    table = operating_characteristic(
        config, baseline, 200, windows=1000, multiples=(0.0, 2.0), sizes=[200, 800]
    )
    rate = {
        (c.feature, c.window_events): c.flag_rate["estimate"]
        for c in table.cells
        if c.multiple == 2.0
    }
    assert rate[("latency_by_device", 200)] < min(rate[("latency_ms", 200)], rate[("device", 200)])
    assert rate[("latency_by_device", 800)] > 0.9
    false_alarms = [c.flag_rate["estimate"] for c in table.cells if c.multiple == 0.0]
    assert max(false_alarms) < 0.02
