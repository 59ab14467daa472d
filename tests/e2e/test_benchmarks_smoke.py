"""The benchmark harness works: `python -m benchmarks.run --smoke --json OUT` (quick's sections and
figures on less data, without the flink section: benchmarks.run.SMOKE_SKIPS) exits 0, writes every
figure as a positive number, prints each with its unit, and leaves no Prism, Flink job server or
broker running.

No speed is asserted: the figures depend on the machine and its load."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kldrift.local.kafka import pid_alive

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 600

EPS_FIGURES = [
    "raw_kafka_consume_eps",
    "raw_kafka_produce_eps",
    "streaming_eps",
    "replay_eps",
    "naive_beam_eps",
    "numpy_limit_eps",
]
SCALING = {
    "size_period": ["1", "6", "60"],
    "bins": ["10", "100", "1000"],
    "features": ["1", "10", "50"],
}
PEAK_RSS = ["replay_worker", "naive_worker", "scaling_worker", "streaming_worker", "live_worker"]
KEYS = ["2", "100", "1000"]  # quick and smoke modes; the full run adds 10000


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--json", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the harness stops its broker and jobs on SIGTERM
        stdout, stderr = proc.communicate(timeout=120)
        pytest.fail(f"benchmarks.run --smoke took over {RUN_TIMEOUT_S} s:\n{stderr[-5000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout[-4000:]}\n{stderr[-6000:]}"
    return json.loads(out.read_text()), stdout


@pytest.mark.timeout(RUN_TIMEOUT_S + 200)
def test_every_figure_is_a_positive_number(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    assert results["errors"] == {}
    for name in [*EPS_FIGURES, "recompute_per_window_s"]:
        assert _positive(results[name]), (name, results.get(name))
    for group, points in SCALING.items():
        for point in points:
            assert _positive(results["scaling"][group][point]), (group, point)
    for count in KEYS:
        point = results["keys"][count]
        assert _positive(point["wall_s"]) and _positive(point["reports_per_s"]), count
        assert isinstance(point["reports"], int) and point["reports"] > 0, count
    # More keys, more (key, window) pairs: each key of the same events reports its own windows.
    assert results["keys"]["2"]["reports"] < results["keys"]["100"]["reports"]
    for name in PEAK_RSS:
        assert _positive(results["peak_rss_mb"][name]), name
    growth = results["rss_growth_mb"]
    # Growth may be 0 or negative (the allocator returns memory): a number, not a positive one.
    assert all(_number(growth[part]) for part in ("worker", "prism", "total"))
    assert _positive(growth["start_worker"]) and _positive(growth["seconds"])
    latency = results["report_latency_s"]
    assert _positive(latency["p50"]) and _positive(latency["p99"])
    assert latency["p50"] <= latency["p99"]
    assert latency["samples"] > 0
    ratio_names = ["streaming_over_raw_consume", "replay_over_naive", "size_period_60_over_1"]
    for name in ratio_names:
        assert _positive(results["ratios"][name]), name
    # The smoke run leaves the flink section out (benchmarks.run.SMOKE_SKIPS): no Flink figure,
    # no Flink ratio, said as missing rather than made up.
    assert "flink" not in results and "flink_p1_eps" not in results
    assert results["ratios"]["flink_p1_over_prism"] is None
    assert results["targets"]["flink_vs_prism"]["met"] is None  # not measured, not "missed"
    machine = results["machine"]
    assert isinstance(machine["nproc"], int) and machine["nproc"] > 0
    for name in ("cpu_model", "python", "beam", "numpy", "date"):
        assert isinstance(machine[name], str) and machine[name], name
    assert set(results["targets"]) == {
        "streaming_vs_raw_consume",
        "replay_vs_numpy_limit",
        "replay_vs_naive",
        "size_period",
        "keys_1000",
        "keys_10000",
        "memory_bounded",
        "report_latency",
        "flink_vs_prism",
    }
    # Not measured in the smoke run: Flink (left out) and 10,000 keys (quick's keys stop at 1,000).
    assert results["targets"]["keys_10000"]["met"] is None
    assert all(
        t["met"] in (True, False)
        for name, t in results["targets"].items()
        if name not in ("flink_vs_prism", "keys_10000")
    )
    # The naive pipeline did the same work as kldrift replay.
    agreement = results["extra"]["naive_agrees_with_replay"]
    assert agreement["naive_windows"] == agreement["replay_windows"] > 0
    assert agreement["same_counts"]


@pytest.mark.timeout(RUN_TIMEOUT_S + 200)
def test_the_table_states_units(quick_run: tuple[dict[str, Any], str]) -> None:
    _, stdout = quick_run
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.strip()}
    for name in EPS_FIGURES:
        assert "events/s" in rows[name].split(), rows[name]
    assert " s " in rows["recompute_per_window_s"]
    for group, points in SCALING.items():
        for point in points:
            assert "events/s" in rows[f"scaling.{group}={point}"].split()
    for count in KEYS:
        assert " s " in rows[f"keys.K={count}.wall_s"]
        assert "reports/s" in rows[f"keys.K={count}.reports_per_s"].split()
    for name in PEAK_RSS:
        assert "MB" in rows[f"peak_rss_mb.{name}"].split()
    for part in ("worker", "prism", "total"):
        assert "MB" in rows[f"rss_growth_mb.{part}"].split()
    for p in ("p50", "p99"):
        assert " s " in rows[f"report_latency_s.{p}"]
    assert any("bits" in line.split() for name, line in rows.items() if name.startswith("drift"))


@pytest.mark.timeout(RUN_TIMEOUT_S + 200)
def test_no_prism_flink_or_broker_left_running(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    processes = results["processes"]
    assert processes["kafka_broker_pid"] and processes["prism_pids"]
    assert processes["flink_job_server_pids"] == []  # the smoke run starts no Flink job
    assert processes["left_running"] == []
    pids = [*processes["prism_pids"], *processes["flink_job_server_pids"]]
    for pid in [*pids, processes["kafka_broker_pid"]]:
        assert not pid_alive(pid), f"pid {pid} still runs"
