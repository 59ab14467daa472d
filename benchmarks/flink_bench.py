"""Flink figures: `kldrift run` events/s on the embedded Flink cluster (parallelism 1 and 2) against
Prism on the same pre-loaded topic, and the checkpoint sizes and report lag of a live checkpointed
Flink job over a long run.

    python -m benchmarks.flink_bench [--events N] [--live-s S] [--json OUT]

Same data and measurement as the `kafka` section of benchmarks.run (events/s from the job's first
read to the last data window's first report), one trial per runner, back to back; compare the
ratios within one run only (the machine is shared). The throughput trials (`alternating_trials`)
are also the `flink` section of benchmarks.run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.kafka_bench import (
    PARTITIONS,
    Job,
    LiveProducer,
    ReportTail,
    log,
    produce,
    streaming_trial,
)
from kldrift.local import flink
from kldrift.local.kafka import LocalKafka, create_topics

FLINK = ("--runner", "FlinkRunner", "--flink_master=[local]")
CHECKPOINT_S = 10
_COMPLETED = re.compile(
    r"^(\d\d):(\d\d):(\d\d)\.\d+ .*Completed checkpoint (\d+) for job \w+ \((\d+) bytes"
)


@dataclass(frozen=True)
class Runner:
    """A Beam runner set-up for `kldrift run`: the Beam flags after `--` and the `kafka:`
    settings it needs (e.g. `readers`)."""

    name: str
    label: str
    beam_args: tuple[str, ...] = ()
    kafka: dict[str, Any] = field(default_factory=dict)


PRISM = Runner("prism", "Prism")
FLINK_P1 = Runner("flink_p1", "Flink, parallelism 1", (*FLINK, "--parallelism=1"))
FLINK_P2_READERS3 = Runner(
    "flink_p2_readers3",
    f"Flink, parallelism 2, {PARTITIONS} readers",
    (*FLINK, "--parallelism=2"),
    {"readers": PARTITIONS},
)
RUNNERS = (PRISM, FLINK_P1, FLINK_P2_READERS3)


def require_job_server() -> None:
    """Refuse to start a Flink trial that would make `kldrift run` download the job server."""
    if not (os.environ.get("KLDRIFT_FLINK_JOB_SERVER_JAR") or flink.is_installed()):
        raise RuntimeError(
            f"Beam's Flink job server is not installed in {flink.install_dir()}: run `make setup` "
            "(the benchmark downloads nothing)"
        )


def alternating_trials(
    bootstrap: str,
    work: Path,
    config: dict[str, Any],
    baseline: Path,
    topic: str,
    expected: set[tuple[str, float]],
    events: int,
    runners: Sequence[Runner] = RUNNERS,
    trials: int = 1,
    runner_pids: list[tuple[int, str]] | None = None,
) -> list[dict[str, Any]]:
    """`trials` rounds of one streaming trial per runner, in turn (prism, flink, prism, flink...),
    over one pre-loaded topic, so that a change of the machine's load hits every runner alike.
    One record per trial: runner, round, events/s, span and start-up seconds, seconds from the
    first read to the first data window's report (the rest of the span is the reports' spread), and
    the CPU seconds of the Python worker (SDK harness, LOOPBACK) and of the runner process (Prism,
    or the Flink job server JVM that holds the embedded cluster) in the span. The (pid, kind) of
    the runner processes are appended to `runner_pids` (even if a trial fails)."""
    if any(FLINK[0] in runner.beam_args for runner in runners):
        require_job_server()
    done: list[dict[str, Any]] = []
    for round_ in range(trials):
        for runner in runners:
            log(
                f"{runner.name}: kldrift run over {events:,} pre-loaded events (trial {round_ + 1})"
            )
            result = streaming_trial(
                bootstrap, work, config, baseline, topic, expected, events,
                runner.beam_args, runner.kafka, runner_pids, job_name=f"stream-{runner.name}",
            )  # fmt: skip
            cpu = result["cpu"] or {}
            done.append(
                {
                    "runner": runner.name,
                    "trial": round_ + 1,
                    "eps": result["eps"],
                    "seconds": result["seconds"],
                    "startup_s": result["startup_s"],
                    "first_report_after_s": result["first_report_after_s"],
                    "read_eps": result["read_eps"],
                    "cpu_span_s": cpu.get("seconds"),
                    "worker_cpu_s": cpu.get("worker_cpu_s"),
                    "runner_process": cpu.get("runner"),
                    "runner_cpu_s": cpu.get("runner_cpu_s"),
                    "peak_rss_mb": {
                        "worker": result["peak_rss_mb"].get("worker"),
                        "runner": result["peak_rss_mb"].get("runner"),
                    },
                }
            )
            log(
                f"{runner.name} trial {round_ + 1}: {result['eps']:,.0f} events/s "
                f"({result['seconds']:.1f} s; start-up {result['startup_s']:.1f} s; "
                f"worker / runner CPU {_seconds(cpu.get('worker_cpu_s'))} / "
                f"{_seconds(cpu.get('runner_cpu_s'))} s)"
            )
    return done


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@dataclass(frozen=True)
class Preloaded:
    """A topic pre-loaded with a QUICK workload of `events` events (and its sentinel), with the
    config, baseline and data windows (`expected`) of a trial over it."""

    topic: str
    config: dict[str, Any]
    baseline: Path
    expected: set[tuple[str, float]]
    events: int


def preload(bootstrap: str, work: Path, events: int, name: str) -> Preloaded:
    """Load topic ``bench.NAME.events`` (dashes dropped) for trials of job ``bench-NAME``."""
    workload = replace(data.QUICK, events=events)
    lines = list(data.stream(workload).lines())
    times, keys = data.event_keys_and_times(lines)
    features = data.base_features()
    baseline = data.write_baseline(work / "baseline.json", features, data.training_events())
    config = data.config(name=f"bench-{name}", features=features)
    topic = f"bench.{name.replace('-', '')}.events"
    create_topics(bootstrap, {topic: PARTITIONS})
    produce(bootstrap, topic, lines, tail=[data.sentinel(workload)])
    expected = data.data_windows(times, keys, data.SIZE_S, data.PERIOD_S)
    return Preloaded(topic, config, baseline, expected, events)


def trials_over(
    bootstrap: str, work: Path, loaded: Preloaded, runners: Sequence[Runner]
) -> list[dict[str, Any]]:
    """`alternating_trials` of `runners`, one round, over the `loaded` topic."""
    return alternating_trials(
        bootstrap, work, loaded.config, loaded.baseline, loaded.topic, loaded.expected,
        loaded.events, runners,
    )  # fmt: skip


def throughput(bootstrap: str, work: Path, events: int) -> dict[str, Any]:
    """One streaming trial per runner over one pre-loaded topic."""
    loaded = preload(bootstrap, work, events, "flink")
    out: dict[str, Any] = {"events": events}
    for trial in trials_over(bootstrap, work, loaded, RUNNERS):
        out[trial["runner"]] = {
            "eps": trial["eps"],
            "seconds": trial["seconds"],
            "startup_s": trial["startup_s"],
        }
    prism = out["prism"]["eps"]
    for name in ("flink_p1", "flink_p2_readers3"):
        out[name]["vs_prism"] = out[name]["eps"] / prism
    return out


def checkpoints(bootstrap: str, work: Path, live_s: float) -> dict[str, Any]:
    """A live checkpointed Flink job for `live_s`: sizes of its checkpoints over time, report lag."""
    topic = "bench.flink.live"
    create_topics(bootstrap, {topic: PARTITIONS})
    features = data.base_features()
    baseline = data.write_baseline(work / "baseline-live.json", features, data.training_events())
    config = data.config(name="bench-flink-live", features=features, size_s=60, period_s=10)
    server_log = work / "job-server-live.log"
    runner_args = (
        *FLINK,
        "--parallelism=1",
        f"--checkpointing_interval={CHECKPOINT_S * 1000}",
        "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{work / 'checkpoints'}",
        f"--job_server_jvm_property=-Dorg.slf4j.simpleLogger.logFile={server_log}",
        "--job_server_jvm_property=-Dorg.slf4j.simpleLogger.log.org.apache.flink.runtime"
        ".checkpoint=info",
    )
    job = Job(bootstrap, work, "live", topic, config, runner_args=runner_args)
    producer = LiveProducer(bootstrap, topic, rate=100.0, drift_at=time.time() + live_s / 2)
    producer.start()
    job.start(baseline)
    tail = ReportTail(bootstrap, job.kafka["output_topic"])
    tail.start()
    began = time.time()
    try:
        while time.time() - began < live_s:
            if not job.alive():
                raise RuntimeError(f"the live Flink job ended: {job.failure()}")
            time.sleep(1)
    finally:
        producer.stop.set()
        job.stop()
        tail.stop.set()
        tail.join(10)
    sizes = [
        (int(m[4]), int(m[5]))
        for m in map(_COMPLETED.match, server_log.read_text().splitlines())
        if m
    ]
    lags = [
        arrived - r["window_end"] for arrived, r in tail.reports if r["window_end"] > began + 60
    ]
    tenth = max(1, len(sizes) // 10)
    return {
        "live_s": live_s,
        "checkpoint_interval_s": CHECKPOINT_S,
        "checkpoints": len(sizes),
        "checkpoint_bytes_first_tenth_median": statistics.median(b for _, b in sizes[:tenth]),
        "checkpoint_bytes_last_tenth_median": statistics.median(b for _, b in sizes[-tenth:]),
        "checkpoint_bytes_max": max(b for _, b in sizes),
        "reports": len(tail.reports),
        "report_lag_s_p50": statistics.median(lags) if lags else None,
        "report_lag_s_max": max(lags) if lags else None,
        "failed_tasks": server_log.read_text().count("switched from RUNNING to FAILED"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--live-s", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kldrift-flink-bench-"))
    broker = LocalKafka(data_dir=work / "kafka")
    broker.start()
    try:
        result = {
            "load_average": os.getloadavg(),
            "throughput": throughput(broker.bootstrap, work, args.events),
        }
        if args.live_s > 0:
            result["checkpoints"] = checkpoints(broker.bootstrap, work, args.live_s)
        result["load_average_after"] = os.getloadavg()
    finally:
        broker.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
