"""`python -m benchmarks.alarms`: how often the drift flag is wrong (seeded simulation, no services).

Prints, with units: (1) the operating characteristic of both decision rules on the 9-bin baseline
of issue 15 (M = 50,000, threshold 0.05 bits, significance 0.01, smoothing 0.5) at N = 80, 500,
5,000; (2) `kldrift power` for the demo's baseline at the demo's window size; (3) false flags and
k-of-m triggers per day on a stationary stream at the demo's settings and at N ~ 80.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from kldrift.power import (
    false_triggers_per_day,
    format_false_triggers,
    format_power_table,
    operating_characteristic,
)
from kldrift.schemas import Baseline, FeatureBaseline, PipelineConfig
from kldrift.synthetic import demo_config, training_lines

NINE_BINS = np.array([0.05, 0.1, 0.15, 0.2, 0.2, 0.15, 0.08, 0.05, 0.02])
DEMO_EVENTS_PER_SECOND = 400 / 60 / 2
"""The demo's 400 events/s of wall time at 60 s of event time per second, over two keys."""


def issue_baseline() -> tuple[PipelineConfig, Baseline]:
    counts = [int(c) for c in np.round(NINE_BINS * 50_000)]
    edges = [float(e) for e in range(1, 9)]
    categories = [f"c{i}" for i in range(8)]  # the rarest bin (2%) is __other__
    config = PipelineConfig.model_validate(
        {
            "name": "issue-15",
            "event_time_field": "ts",
            "window": {"size": "10s", "period": "10s"},
            "features": [
                {"name": "numeric", "kind": "numeric", "edges": edges},
                {"name": "categorical", "kind": "categorical", "categories": categories},
            ],
            "drift": {"smoothing": 0.5, "threshold_bits": 0.05, "significance": 0.01},
        }
    )
    baseline = Baseline.create(
        [
            FeatureBaseline(name="numeric", kind="numeric", edges=edges, counts=counts),
            FeatureBaseline(
                name="categorical", kind="categorical", categories=categories, counts=counts
            ),
        ],
        source="benchmarks.alarms",
        created_at="2026-12-01T00:00:00Z",
    )
    return config, baseline


def demo_baseline(folder: Path) -> tuple[PipelineConfig, Baseline]:
    from kldrift.local.runners import local_runner_args
    from kldrift.pipeline.baseline import build_baseline

    config = PipelineConfig.model_validate(demo_config())
    training = folder / "training.jsonl"
    training.write_bytes(b"\n".join(training_lines(20_000, seed=3)) + b"\n")
    baseline = build_baseline(
        config, str(training), str(folder / "baseline.json"), beam_args=local_runner_args([])
    )
    return config, baseline


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.alarms", description=__doc__)
    parser.add_argument("--windows", type=int, default=4000, help="simulated windows per cell")
    parser.add_argument("--days", type=float, default=30.0, help="simulated days per stream")
    args = parser.parse_args()

    config, baseline = issue_baseline()
    started = time.monotonic()
    table = operating_characteristic(
        config, baseline, 500, windows=args.windows, seed=15, sizes=[80, 500, 5000]
    )
    print("## Issue 15's baseline: 9 bins, M = 50,000\n")
    print(format_power_table(table))
    print(f"\n({time.monotonic() - started:.1f} s)\n")

    with tempfile.TemporaryDirectory() as tmp:
        demo, demo_base = demo_baseline(Path(tmp))
    n = round(DEMO_EVENTS_PER_SECOND * demo.window.size)
    started = time.monotonic()
    print(f"## The demo's baseline, N = {n} events per window and key\n")
    print(format_power_table(operating_characteristic(demo, demo_base, n, windows=args.windows)))
    print(f"\n({time.monotonic() - started:.1f} s)\n")

    for rate in (DEMO_EVENTS_PER_SECOND, 80 / demo.window.size):
        started = time.monotonic()
        rows = false_triggers_per_day(demo, demo_base, rate, days=args.days, seed=16)
        print(
            f"## Stationary stream, {rate:.3g} events/s per key (N ~ {rate * demo.window.size:.0f} "
            f"per {demo.window.size:g} s window, a window every {demo.window.period:g} s), "
            f"{args.days:g} days, per (key, feature)\n"
        )
        print(format_false_triggers(rows, 3, 5))
        print(f"\n({time.monotonic() - started:.1f} s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
