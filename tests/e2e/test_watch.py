"""`kldrift watch --on-drift` on a real broker: the trigger reaches the command, a failing command
is retried with backoff, and the offset is committed only after it succeeded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _jobs import committed, report_topic_config, send_reports, wait_for, watcher
from _reports import make_report, make_summary

from kldrift.schemas.report import DriftReport

pytestmark = pytest.mark.services


def _report(minute: int, drift: bool) -> DriftReport:
    return make_report(minute, drift, pipeline="watch-test", key="model-a", window_minutes=2)


def test_watch_runs_the_command_retries_a_failure_and_commits_after_success(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic, config = report_topic_config(tmp_path, kafka_bootstrap, "watch-test")
    # The command fails on its first run and succeeds on the second; it keeps what it was given.
    attempts, received = tmp_path / "attempts", tmp_path / "trigger.json"
    script = tmp_path / "retrain.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{attempts}"\n'
        f'if [ "$(wc -l < "{attempts}")" -lt 2 ]; then echo "orchestrator down" >&2; exit 7; fi\n'
        f'cat > "{received}"\n'
        f'echo "$KLDRIFT_KEY $KLDRIFT_FEATURE" >> "{received}.env"\n'
    )
    script.chmod(0o755)
    flags = [False, True, False, True, True]  # the 5th window completes 3 of the last 5
    send_reports(kafka_bootstrap, topic, [_report(m, f) for m, f in enumerate(flags, start=1)])

    with watcher(
        config, "--on-drift", str(script), "--k", "3", "--m", "5", "--retry-backoff", "0.3"
    ) as watch:
        wait_for(received.exists, 60, "the command's second, successful run")
        time.sleep(1.5)
    output = watch.output
    assert watch.returncode == 0, output
    trigger = json.loads(received.read_text())
    assert trigger["key"] == "model-a" and trigger["feature"] == "latency_ms"
    assert trigger["drifted_windows"] == 3 and trigger["considered_windows"] == 5
    assert trigger["window_end"] == "2024-01-01T00:05:00Z"
    assert (tmp_path / "trigger.json.env").read_text().strip() == "model-a latency_ms"
    assert attempts.read_text().count("x") == 2
    assert "failed (attempt 1): exit code 7: orchestrator down" in output
    assert "retraining triggered for model-a latency_ms (attempt 2)" in output
    assert output.count("DRIFT") == 3

    # Every report up to the trigger is committed: a restarted watcher would not see them again.
    assert committed(kafka_bootstrap, watch.group, topic) == len(flags)


def test_a_command_that_keeps_failing_leaves_the_drift_episode_uncommitted(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic, config = report_topic_config(tmp_path, kafka_bootstrap, "watch-test")
    flags = [False, True, True]
    send_reports(kafka_bootstrap, topic, [_report(m, f) for m, f in enumerate(flags, start=1)])
    with watcher(
        config, "--on-drift", "exit 3", "--k", "2", "--m", "3", "--retry-backoff", "0.2"
    ) as watch:
        time.sleep(8)
    assert watch.returncode == 0, watch.output
    assert "failed (attempt 2)" in watch.output
    # Only the calm first window is committed; the two drifted ones will be delivered again.
    assert committed(kafka_bootstrap, watch.group, topic) == 1


def test_window_scope_triggers_on_the_summaries_alone(tmp_path: Path, kafka_bootstrap: str) -> None:
    """Every feature report says drift (feature scope would fire at once); the summaries say two
    of three windows drifted: `--scope window` fires once, at the third, from the summaries."""
    topic, config = report_topic_config(tmp_path, kafka_bootstrap, "watch-test")
    received = tmp_path / "trigger.json"
    records: list = []
    for minute, drift in enumerate([True, False, True], start=1):
        records.append(_report(minute, True))
        records.append(
            make_summary(
                minute,
                drift,
                pipeline="watch-test",
                key="model-a",
                window_minutes=2,
                drifted=("latency_ms", "latency_by_country"),
            )
        )
    send_reports(kafka_bootstrap, topic, records)
    with watcher(
        config, "--scope", "window", "--k", "2", "--m", "3", "--on-drift", f'cat > "{received}"'
    ) as watch:
        wait_for(received.exists, 60, "the trigger")
        time.sleep(1.5)
    assert watch.returncode == 0, watch.output
    trigger = json.loads(received.read_text())
    assert trigger["feature"] is None and trigger["window_end"] == "2024-01-01T00:03:00Z"
    assert trigger["features"] == ["latency_by_country", "latency_ms"]
    assert (trigger["drifted_windows"], trigger["considered_windows"]) == (2, 3)
    assert watch.output.count("TRIGGER") == 1
    # The summaries' lines are printed with the reports': 3 drifted reports, 2 drifted windows.
    assert watch.output.count("window rev 0") == 3
    assert watch.output.count("DRIFT") == 3 + 2
    assert committed(kafka_bootstrap, watch.group, topic) == len(records)
