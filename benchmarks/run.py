"""`python -m benchmarks.run [--quick] [--json OUT]`: every kldrift benchmark in one run.

Same machine, same seeded events (benchmarks.data), each figure the median of its trials (3, or 1
with --quick). Prints a table with units and writes the figures as JSON. Starts its own Kafka
broker (LocalKafka, temporary data dir) and always stops it; every Beam job runs in a child process
group that is stopped at the end, so no Prism process is left behind. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import core, data
from benchmarks.flink_bench import RUNNERS as FLINK_RUNNERS
from benchmarks.flink_bench import alternating_trials
from benchmarks.kafka_bench import (
    PARTITIONS,
    POLL_MAX_RECORDS,
    REPO,
    consume,
    fetched_responses,
    live_run,
    log,
    parse_rates,
    produce,
    streaming_trial,
)
from benchmarks.procs import stop_group
from kldrift.local.kafka import pid_alive

SECTIONS = ("core", "replay", "naive", "scaling", "keys", "kafka", "flink", "live")
SMOKE_SKIPS = ("flink",)
"""Sections the smoke run (the test suite's) leaves out: the flink section's embedded-cluster job
costs the suite about a minute of both cores, and kldrift run on Flink is tested end to end by
tests/e2e (embedded cluster, session cluster, restarts); `make bench` runs it."""
SIZE_PERIOD = (1, 6, 60)
KEYS = (2, 100, 1_000, 10_000)
KEYS_QUICK = (2, 100, 1_000)
"""Quick mode stops at 1,000 keys: 10,000 keys take minutes (one report per key and window)."""
KEYS_EVENTS = 100_000
"""The keys point replays the first 100,000 events (all of them in quick mode), split over K keys."""
KEYS_SIZE_S, KEYS_PERIOD_S = 600, 120
KEYS_TARGETS = {1_000: 3.0, 10_000: 10.0}
"""Issue 27's many-keys targets: replay wall time at K keys at most this many times K = 2's."""
BINS = (10, 100, 1000)
FEATURES = (1, 10, 50)
WORKER_TIMEOUT_S = 3600
PROCESS_READERS = (1, 2)
"""kafka.readers of the `kldrift run --worker-processes` trials (the kafka section, not smoke)."""

UNITS = {
    "raw_kafka_consume_eps": "events/s",
    "raw_kafka_produce_eps": "events/s",
    "streaming_eps": "events/s",
    "streaming_avro_eps": "events/s",
    "streaming_processes_eps": "events/s (kldrift run --worker-processes; key: readers)",
    "flink_prism_eps": "events/s",
    "flink_p1_eps": "events/s",
    "flink_p2_readers3_eps": "events/s",
    "flink": "events/s, s (span, start-up, CPU)",
    "replay_eps": "events/s",
    "naive_beam_eps": "events/s",
    "numpy_limit_eps": "events/s",
    "recompute_per_window_s": "s",
    "scaling": "events/s",
    "keys": "s, reports, reports/s, events/s",
    "peak_rss_mb": "MB",
    "rss_growth_mb": "MB",
    "report_latency_s": "s",
    "drift_check_bits": "bits",
}


@dataclass
class Point:
    """One workload variant: a config + baseline over an events file."""

    name: str
    config: Path
    baseline: Path
    input: Path
    events: int
    config_data: dict[str, Any]


@dataclass
class Bench:
    quick: bool
    workload: data.Workload
    workdir: Path
    sections: tuple[str, ...]
    out: dict[str, Any] = field(default_factory=dict)
    trials: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    points: dict[str, Point] = field(default_factory=dict)
    lines: list[bytes] = field(default_factory=list)
    times: Any = None
    training: list[dict[str, Any]] = field(default_factory=list)
    prism_pids: list[int | None] = field(default_factory=list)
    runner_pids: list[tuple[int, str]] = field(default_factory=list)
    """(pid, "prism" or "flink_job_server") of the runners of `kldrift run` trials."""
    input_topic: str | None = None
    broker: Any = None
    broker_pid: int | None = None

    def median(self, name: str, values: list[float]) -> float:
        self.trials[name] = values
        return float(statistics.median(values))


# -- preparation -----------------------------------------------------------------------------


def prepare(bench: Bench) -> None:
    work, workload = bench.workdir, bench.workload
    log(f"generating {workload.events:,} seeded events (drift at the midpoint) in {work}")
    bench.lines = list(data.stream(workload).lines())
    bench.times, _ = data.event_keys_and_times(bench.lines)
    events = work / "events.jsonl"
    data.write_lines(events, bench.lines)
    wide = work / "events_wide.jsonl"
    data.write_lines(wide, (json.dumps(data.widen(json.loads(x))).encode() for x in bench.lines))
    data.write_lines(work / "warmup.jsonl", bench.lines[:200])
    bench.training = data.training_events()

    def point(
        name: str,
        features: list[dict[str, Any]],
        source: Path,
        size_s: int = data.SIZE_S,
        period_s: int = data.PERIOD_S,
    ) -> None:
        baseline = data.write_baseline(work / f"baseline-{name}.json", features, bench.training)
        config = data.config(
            name=f"bench-{name}", features=features, size_s=size_s, period_s=period_s
        )
        path = work / f"config-{name}.json"
        path.write_text(json.dumps(dict(config, baseline=str(baseline)), indent=1))
        bench.points[name] = Point(name, path, baseline, source, workload.events, config)

    point("base", data.base_features(), events)
    for ratio in SIZE_PERIOD:
        point(f"size_period_{ratio}", data.base_features(), events, size_s=data.PERIOD_S * ratio)
    for bins in BINS:
        point(f"bins_{bins}", data.binned_features(bins, bench.training), events)
    for count in FEATURES:
        point(f"features_{count}", data.wide_features(count), wide)
    # Many keys: the same events, key_field rewritten round-robin to K values; 2 features,
    # window 600 s every 120 s (the "many keys" workload).
    keyed = bench.lines[:KEYS_EVENTS]
    for count in keys_counts(bench):
        path = work / f"events_keys_{count}.jsonl"
        data.write_lines(path, data.split_keys(keyed, count))
        point(f"keys_{count}", data.base_features()[:2], path, KEYS_SIZE_S, KEYS_PERIOD_S)
        bench.points[f"keys_{count}"].events = len(keyed)


# -- sections ----------------------------------------------------------------------------------


def section_core(bench: Bench) -> None:
    from kldrift.schemas.config import load_config

    config = load_config(bench.points["base"].config)
    n = len(bench.lines)
    log("numpy limit: json.loads + FeatureBins.count, no Beam, no Kafka")
    limit = [n / core.numpy_limit_s(bench.lines, config) for _ in range(bench.workload.trials)]
    bench.out["numpy_limit_eps"] = bench.median("numpy_limit_eps", limit)
    decode = [n / core.decode_bin_s(bench.lines, config) for _ in range(bench.workload.trials)]
    bench.out.setdefault("extra", {})["decode_bin_core_eps"] = bench.median(
        "decode_bin_core_eps", decode
    )
    log("recompute per window: json.loads + bin one window's raw events")
    per_window = []
    for _ in range(bench.workload.trials):
        seconds, events_per_window = core.recompute_window_s(bench.lines, bench.times, config)
        per_window.append(seconds)
    bench.out["recompute_per_window_s"] = bench.median("recompute_per_window_s", per_window)
    events_per_period = events_per_window * config.window.period / config.window.size
    bench.out["extra"]["recompute_events_per_window"] = events_per_window
    bench.out["extra"]["recompute_equivalent_eps"] = (
        events_per_period / bench.out["recompute_per_window_s"]
    )
    evidently_s, how = core.evidently_window_s(bench.lines, bench.times, config, bench.training)
    bench.out["extra"]["evidently_per_window_s"] = evidently_s
    bench.out["extra"]["evidently_note"] = how


def run_worker(
    bench: Bench, task: str, points: list[Point], overhead: bool, trials: int | None = None
) -> dict[str, Any]:
    spec = {
        "task": task,
        "trials": bench.workload.trials if trials is None else trials,
        "overhead": overhead,
        "warmup_input": str(bench.workdir / "warmup.jsonl"),
        "points": [
            {
                "name": p.name,
                "config": str(p.config),
                "baseline": str(p.baseline),
                "input": str(p.input),
                "events": p.events,
                "output": str(bench.workdir / f"{task}-{p.name}.out.jsonl"),
            }
            for p in points
        ],
    }
    spec_path = bench.workdir / f"worker-{task}-{points[0].name}.json"
    out_path = spec_path.with_suffix(".result.json")
    log_path = spec_path.with_suffix(".log")
    spec_path.write_text(json.dumps(spec, indent=1))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    with log_path.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", str(spec_path), str(out_path)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        try:
            proc.wait(WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop_group(proc, signal.SIGTERM, wait_s=10)
    text = log_path.read_text()
    for line in text.splitlines():
        if line.startswith("worker:"):
            log(line)
    if proc.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"worker {task} failed (exit {proc.returncode}):\n{text[-4000:]}")
    return json.loads(out_path.read_text())


def section_replay(bench: Bench) -> None:
    log("replay: kldrift replay (run_replay) over the events file, on Prism")
    result = run_worker(bench, "replay", [bench.points["base"]], overhead=True)
    base = result["points"]["base"]
    bench.out["replay_eps"] = bench.median("replay_eps", base["eps"])
    extra = bench.out.setdefault("extra", {})
    extra["replay_job_overhead_s"] = base["overhead_s"]
    extra["replay_net_of_overhead_eps"] = _net_eps(bench, base)
    extra["replay_first_job_s"] = base["warmup_s"]
    extra["replay_reports"] = base["outcome"]["reports"]
    if base["outcome"]["events_binned"] != bench.workload.events:
        raise RuntimeError(f"replay binned {base['outcome']['events_binned']} events")
    _record_worker(bench, "replay", result)
    bench.out["drift_check_bits"] = drift_check(bench, bench.workdir / "replay-base.out.jsonl")


def _record_worker(bench: Bench, name: str, result: dict[str, Any]) -> None:
    """A worker run's peak RSS (worker and its Prism) and its Prism pid, for the leftover check."""
    peaks = bench.out.setdefault("peak_rss_mb", {})
    peaks[f"{name}_worker"] = result["peak_rss_mb"]
    peaks[f"{name}_prism"] = result["prism_peak_rss_mb"]
    bench.prism_pids.append(result.get("prism_pid"))


def _net_eps(bench: Bench, point: dict[str, Any]) -> float | None:
    """Events/s once the job's fixed cost (a 200-event run's time) is taken out of each trial."""
    net = [t - point["overhead_s"] for t in point["times_s"]]
    if min(net) <= 0:
        return None
    return float(statistics.median(bench.workload.events / t for t in net))


def drift_check(bench: Bench, replay_output: Path) -> dict[str, float]:
    """Median KL (bits) of latency_ms windows wholly before and wholly after the injected drift."""
    drift_at = bench.workload.drift_at_s
    before, after = [], []
    for line in data.read_lines(replay_output):
        report = json.loads(line)
        if report["feature"] != "latency_ms" or report["kl_bits"] is None:
            continue
        start = datetime.datetime.fromisoformat(report["window_start"].replace("Z", "+00:00"))
        end = datetime.datetime.fromisoformat(report["window_end"].replace("Z", "+00:00"))
        if end.timestamp() <= drift_at:
            before.append(report["kl_bits"])
        elif start.timestamp() >= drift_at:
            after.append(report["kl_bits"])
    return {
        "latency_kl_before_drift": float(np.median(before)),
        "latency_kl_after_drift": float(np.median(after)),
    }


def section_naive(bench: Bench) -> None:
    log("naive Beam: ReadFromText, json.loads, SlidingWindows, per-event bins, CombinePerKey, KL")
    result = run_worker(bench, "naive", [bench.points["base"]], overhead=True)
    base = result["points"]["base"]
    bench.out["naive_beam_eps"] = bench.median("naive_beam_eps", base["eps"])
    extra = bench.out.setdefault("extra", {})
    extra["naive_job_overhead_s"] = base["overhead_s"]
    extra["naive_net_of_overhead_eps"] = _net_eps(bench, base)
    _record_worker(bench, "naive", result)
    replay_out = bench.workdir / "replay-base.out.jsonl"
    if replay_out.exists():
        extra["naive_agrees_with_replay"] = compare_naive(
            bench.workdir / "naive-base.out.jsonl", replay_out
        )


def compare_naive(naive_out: Path, replay_out: Path) -> dict[str, Any]:
    """The naive pipeline's windows and KL against kldrift replay's (a check that both did the
    same work)."""
    naive = {}
    for line in data.read_lines(naive_out):
        r = json.loads(line)
        naive[(r["key"], r["feature"], r["window_start"])] = (r["count"], r["kl_bits"])
    replay = {}
    for line in data.read_lines(replay_out):
        r = json.loads(line)
        start = datetime.datetime.fromisoformat(r["window_start"].replace("Z", "+00:00"))
        replay[(r["key"], r["feature"], start.timestamp())] = (r["count"], r["kl_bits"])
    common = set(naive) & set(replay)
    diffs = [
        abs(naive[w][1] - replay[w][1])
        for w in common
        if naive[w][1] is not None and replay[w][1] is not None
    ]
    return {
        "naive_windows": len(naive),
        "replay_windows": len(replay),
        "same_counts": all(naive[w][0] == replay[w][0] for w in common),
        "max_abs_kl_diff_bits": max(diffs) if diffs else None,
    }


def section_scaling(bench: Bench) -> None:
    names = [f"size_period_{r}" for r in SIZE_PERIOD]
    names += [f"bins_{b}" for b in BINS] + [f"features_{f}" for f in FEATURES]
    log(f"scaling: replay at {', '.join(names)}")
    result = run_worker(bench, "replay", [bench.points[n] for n in names], overhead=False)
    scaling: dict[str, dict[str, float]] = {"size_period": {}, "bins": {}, "features": {}}
    for name in names:
        group, value = name.rsplit("_", 1)
        eps = bench.median(f"scaling.{name}", result["points"][name]["eps"])
        scaling[group][value] = eps
    bench.out["scaling"] = scaling
    _record_worker(bench, "scaling", result)


def keys_counts(bench: Bench) -> tuple[int, ...]:
    return KEYS_QUICK if bench.quick else KEYS


def section_keys(bench: Bench) -> None:
    counts = keys_counts(bench)
    names = [f"keys_{k}" for k in counts]
    log(f"keys: replay of the same events split over K = {', '.join(map(str, counts))} keys")
    # The workload's trials per K (3 in full mode), the median: the targets are ratios of wall
    # times, and one K = 10,000 replay varies by 20-30% from run to run (Prism hands Score its
    # input in one bundle or two; benchmarks/README).
    result = run_worker(bench, "replay", [bench.points[n] for n in names], overhead=False)
    keys: dict[str, dict[str, float]] = {}
    for count, name in zip(counts, names, strict=True):
        point = result["points"][name]
        seconds = bench.median(f"keys.{name}.wall_s", point["times_s"])
        reports = point["outcome"]["reports"]
        keys[str(count)] = {
            "wall_s": seconds,
            "reports": reports,
            "reports_per_s": reports / seconds,
            "events_per_s": bench.points[name].events / seconds,
            "worker_cpu_s": point["outcome"].get("worker_cpu_s"),
            "prism_cpu_s": point["outcome"].get("prism_cpu_s"),
        }
        if point["outcome"]["events_binned"] != bench.points[name].events:
            raise RuntimeError(f"{name} binned {point['outcome']['events_binned']} events")
    bench.out["keys"] = keys
    _record_worker(bench, "keys", result)


def broker(bench: Bench) -> str:
    """The bootstrap address of this run's Kafka broker, started on first use; main() stops it."""
    from kldrift.local.kafka import LocalKafka

    if bench.broker is None:
        log("starting a local Kafka broker (temporary data dir)")
        bench.broker = LocalKafka()
        bench.broker.start()
        bench.broker_pid = bench.broker.pid
    return bench.broker.bootstrap


def preloaded_topic(bench: Bench) -> str:
    """The input topic of the streaming trials, created and loaded on first use (untimed): the
    events, then one sentinel per partition past every data window (see streaming_trial)."""
    from kldrift.local.kafka import create_topics

    if bench.input_topic is None:
        topic = "bench.events"
        bootstrap = broker(bench)
        create_topics(bootstrap, {topic: PARTITIONS})
        produce(bootstrap, topic, bench.lines, tail=[data.sentinel(bench.workload)])
        bench.input_topic = topic
    return bench.input_topic


def data_windows(bench: Bench) -> set[tuple[str, float]]:
    """(key, window start) of every window of the base config that holds data."""
    _, keys = data.event_keys_and_times(bench.lines)
    return data.data_windows(bench.times, keys, data.SIZE_S, data.PERIOD_S)


def section_kafka(bench: Bench) -> None:
    from kldrift.local.kafka import create_topics
    from kldrift.schemas.config import load_config

    base = bench.points["base"]
    bootstrap = broker(bench)
    n = len(bench.lines)
    # The input topic first (untimed): it also warms the broker up for the timed runs.
    input_topic = preloaded_topic(bench)
    produce_eps = []
    for trial in range(bench.workload.trials):
        topic = f"bench.produce.{trial}"
        create_topics(bootstrap, {topic: PARTITIONS})
        produce_eps.append(n / produce(bootstrap, topic, bench.lines))
    bench.out["raw_kafka_produce_eps"] = bench.median("raw_kafka_produce_eps", produce_eps)
    consume(bootstrap, input_topic)  # warm-up, untimed
    consume_eps = []
    for _ in range(bench.workload.trials):
        seconds, records = consume(bootstrap, input_topic)
        consume_eps.append(records / seconds)
    bench.out["raw_kafka_consume_eps"] = bench.median("raw_kafka_consume_eps", consume_eps)
    seconds, records = consume(bootstrap, input_topic, decode=load_config(base.config))
    extra = bench.out.setdefault("extra", {})
    extra["raw_kafka_consume_decode_eps"] = records / seconds
    log(f"raw kafka-python: {produce_eps[-1]:,.0f} produced/s, {consume_eps[-1]:,.0f} read/s")
    parse_section(bench, bootstrap, input_topic)

    expected = data_windows(bench)
    trials = []
    in_processes: dict[int, list[dict[str, Any]]] = {readers: [] for readers in PROCESS_READERS}
    for trial in range(bench.workload.trials):
        log(f"streaming: kldrift run on Prism over the pre-loaded topic (trial {trial + 1})")
        result = streaming_trial(
            bootstrap, bench.workdir, base.config_data, base.baseline, input_topic, expected, n,
            runner_pids=bench.runner_pids,
        )  # fmt: skip
        log(
            f"streaming trial {trial + 1}: {result['eps']:,.0f} events/s "
            f"({result['seconds']:.1f} s; job start-up {result['startup_s']:.1f} s)"
        )
        trials.append(result)
        if bench.workload is data.SMOKE:  # the suite's budget: the e2e restart test runs them
            continue
        for readers, results in in_processes.items():  # alternating with the trial above
            log(f"streaming: kldrift run --worker-processes, {readers} reader(s)")
            result = streaming_trial(
                bootstrap, bench.workdir, base.config_data, base.baseline, input_topic, expected,
                n, kafka_extra={"readers": readers}, runner_pids=bench.runner_pids,
                job_name=f"stream-processes-{readers}", run_flags=("--worker-processes",),
            )  # fmt: skip
            log(f"worker processes, {readers} reader(s): {result['eps']:,.0f} events/s")
            results.append(result)
    for readers, results in in_processes.items():
        if results:
            bench.out.setdefault("streaming_processes_eps", {})[str(readers)] = bench.median(
                f"streaming_processes_{readers}_eps", [t["eps"] for t in results]
            )
            bench.out.setdefault("extra", {})[f"streaming_processes_{readers}_cpu"] = [
                t["cpu"] for t in results
            ]
    bench.out["streaming_eps"] = bench.median("streaming_eps", [t["eps"] for t in trials])
    extra = bench.out.setdefault("extra", {})
    extra["streaming_job_startup_s"] = statistics.median(t["startup_s"] for t in trials)
    extra["streaming_first_report_after_s"] = statistics.median(
        t["first_report_after_s"] for t in trials
    )
    extra["streaming_totals"] = trials[-1]["totals"]
    read = [t["read_eps"] for t in trials if t["read_eps"]]
    extra["streaming_source_read_eps"] = statistics.median(read) if read else None
    halves = [t["halves_eps"] for t in trials if t["halves_eps"]]
    extra["streaming_first_half_eps"] = statistics.median(h[0] for h in halves) if halves else None
    extra["streaming_second_half_eps"] = statistics.median(h[1] for h in halves) if halves else None
    extra["streaming_cpu"] = trials[-1]["cpu"]
    peaks = bench.out.setdefault("peak_rss_mb", {})
    peaks["streaming_worker"] = max(t["peak_rss_mb"]["worker"] or 0 for t in trials)
    peaks["streaming_prism"] = max(t["peak_rss_mb"]["runner"] or 0 for t in trials)
    if bench.workload is not data.SMOKE:  # the smoke run keeps the suite short: no registry
        avro_case(bench, bootstrap, expected)


def parse_section(bench: Bench, bootstrap: str, input_topic: str) -> None:
    """The record parse alone: kafka-python's and kldrift's bulk parse (kldrift.io.kafka_records)
    over the same raw fetch responses of the input topic, records/s; and a raw consume with the
    bulk parse (the source's ceiling as kldrift's reader parses)."""
    extra = bench.out.setdefault("extra", {})
    rates = parse_rates(fetched_responses(bootstrap, input_topic))
    extra["parse_kafka_python_rps"] = rates["kafka_python"]
    extra["parse_bulk_rps"] = rates["bulk"]
    seconds, records = consume(bootstrap, input_topic, bulk=True)
    extra["raw_kafka_consume_bulk_eps"] = records / seconds
    log(
        f"record parse: kafka-python {rates['kafka_python']:,.0f} records/s, kldrift's bulk "
        f"parse {rates['bulk']:,.0f} records/s; raw consume with it {records / seconds:,.0f}/s"
    )


def avro_case(bench: Bench, bootstrap: str, expected: set[tuple[str, float]]) -> None:
    """The same events as Avro (confluent-kafka's AvroSerializer, a local Schema Registry):
    the decode-only ceiling in this process (fastavro + kldrift's event checks, vs JSON's on the
    same events) and `kldrift run` with kafka.format avro on a pre-loaded topic (events/s, vs the
    JSON trials above in the same run)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from kldrift.events import EventDecoder, RecordBatch
    from kldrift.formats import record_format
    from kldrift.local.kafka import create_topics
    from kldrift.local.registry import LocalRegistry
    from kldrift.schemas.config import parse_config
    from kldrift.synthetic import AVRO_EVENT_SCHEMA, avro_record

    base = bench.points["base"]
    topic = "bench.events.avro"
    with LocalRegistry(bench.workdir / "registry") as registry:
        log(f"avro: Schema Registry up in {registry.startup_seconds:.1f} s")
        serialize = AvroSerializer(
            SchemaRegistryClient({"url": registry.url}), json.dumps(AVRO_EVENT_SCHEMA)
        )
        context = SerializationContext(topic, MessageField.VALUE)

        def encode(line: bytes) -> bytes:
            value = serialize(avro_record(json.loads(line)), context)
            assert value is not None
            return value

        values = [encode(line) for line in bench.lines]
        avro_kafka = {"format": "avro", "schema_registry": {"url": registry.url}}
        config = parse_config(
            {
                **base.config_data,
                "kafka": {
                    "bootstrap_servers": bootstrap,
                    "input_topic": topic,
                    "output_topic": "unused",
                    "dead_letter_topic": "unused",
                    **avro_kafka,
                },
            }
        )
        decoder = EventDecoder(config)
        avro = record_format(config.kafka.format, config.kafka.schema_registry)  # type: ignore[union-attr]
        assert avro is not None
        ceilings: dict[str, float] = {}
        for name, decode in (
            (
                "json",
                lambda chunk: decoder.decode_columns(RecordBatch(chunk, list(range(len(chunk))))),
            ),
            (
                "avro",
                lambda chunk: decoder.decode_parsed(
                    RecordBatch(chunk, list(range(len(chunk)))), *avro.decode(chunk)
                ),
            ),
        ):
            lines = bench.lines if name == "json" else values
            started = time.perf_counter()
            for at in range(0, len(lines), POLL_MAX_RECORDS):
                decode(lines[at : at + POLL_MAX_RECORDS])
            ceilings[name] = len(lines) / (time.perf_counter() - started)
        extra = bench.out.setdefault("extra", {})
        extra["decode_only_json_eps"] = ceilings["json"]
        extra["decode_only_avro_eps"] = ceilings["avro"]
        log(f"decode only: JSON {ceilings['json']:,.0f} events/s, Avro {ceilings['avro']:,.0f}")
        create_topics(bootstrap, {topic: PARTITIONS})
        produce(bootstrap, topic, values, tail=[encode(data.sentinel(bench.workload))])
        log("streaming: kldrift run on Prism over the pre-loaded Avro topic")
        result = streaming_trial(
            bootstrap, bench.workdir, base.config_data, base.baseline, topic, expected,
            len(values), kafka_extra=avro_kafka, runner_pids=bench.runner_pids,
            job_name="stream-avro",
        )  # fmt: skip
        log(f"streaming Avro: {result['eps']:,.0f} events/s ({result['seconds']:.1f} s)")
        bench.out["streaming_avro_eps"] = result["eps"]
        extra["registry_startup_s"] = registry.startup_seconds


def section_flink(bench: Bench) -> None:
    """Prism and Flink (embedded cluster: parallelism 1; parallelism 2 with 3 readers) on the same
    pre-loaded topic, one trial of each in turn, `trials` rounds."""
    base = bench.points["base"]
    bootstrap = broker(bench)
    topic = preloaded_topic(bench)
    n = len(bench.lines)
    flink_runners = FLINK_RUNNERS
    names = ", ".join(r.name for r in flink_runners)
    log(f"flink: kldrift run over the pre-loaded topic, {names} in turn")
    done = alternating_trials(
        bootstrap, bench.workdir, base.config_data, base.baseline, topic, data_windows(bench), n,
        flink_runners, bench.workload.trials, bench.runner_pids,
    )  # fmt: skip
    runners: dict[str, dict[str, Any]] = {}
    for runner in flink_runners:
        mine = [t for t in done if t["runner"] == runner.name]
        key = f"flink_{runner.name}_eps" if runner.name == "prism" else f"{runner.name}_eps"
        bench.out[key] = bench.median(key, [t["eps"] for t in mine])

        def median(name: str, trials: list[dict[str, Any]] = mine) -> float | None:
            values = [t[name] for t in trials if t[name] is not None]
            return float(statistics.median(values)) if values else None

        runners[runner.name] = {
            "eps": bench.out[key],
            "seconds": median("seconds"),
            "startup_s": median("startup_s"),
            "first_report_after_s": median("first_report_after_s"),
            "cpu_span_s": median("cpu_span_s"),
            "worker_cpu_s": median("worker_cpu_s"),
            "runner_cpu_s": median("runner_cpu_s"),
            "runner_process": mine[-1]["runner_process"],
            "label": runner.label,
            "beam_args": list(runner.beam_args),
            "kafka": runner.kafka,
        }
    bench.out["flink"] = {"events": n, "runners": runners, "trials": done}


def section_live(bench: Bench) -> None:
    base = bench.points["base"]
    bootstrap = broker(bench)
    log(
        f"live: kldrift run on a live stream at {bench.workload.live_rate:.0f} events/s for "
        f"{bench.workload.live_s:.0f} s after its first report"
    )
    live = live_run(
        bootstrap,
        bench.workdir,
        base.config_data,
        base.baseline,
        bench.workload.live_s,
        bench.workload.live_rate,
    )
    bench.prism_pids.append(live["peak_rss_mb"].get("runner_pid"))
    latencies = live["latencies_s"]
    if not latencies:
        raise RuntimeError(f"no live window reported: {live['failure']}\n{live['job_output']}")
    bench.out["report_latency_s"] = {
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "samples": len(latencies),
        "missing_reports": live["missing_reports"],
        "p50_from_watermark_event": float(np.percentile(live["latency_from_watermark_s"], 50)),
        "p99_from_watermark_event": float(np.percentile(live["latency_from_watermark_s"], 99)),
    }
    bench.out["rss_growth_mb"] = live["rss_growth_mb"]
    peaks = bench.out.setdefault("peak_rss_mb", {})
    peaks["live_worker"] = live["peak_rss_mb"].get("worker")
    peaks["live_prism"] = live["peak_rss_mb"].get("runner")
    extra = bench.out.setdefault("extra", {})
    extra["live_events_sent"] = live["events_sent"]
    extra["live_totals"] = live["totals"]
    extra["live_cpu"] = live["cpu"]
    if live["failure"]:
        raise RuntimeError(f"{live['failure']}\n{live['job_output']}")


# -- summary -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import apache_beam
    import kafka
    import scipy
    from kafka.record.util import crc32c_c

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "beam": apache_beam.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "kafka_python": kafka.__version__,
        "kafka_python_crc32c": "C (crc32c package)" if crc32c_c is not None else "pure Python",
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg()[0],
        **kldrift_revision(),
    }


def kldrift_revision() -> dict[str, Any]:
    """The commit measured, and whether kldrift/ had uncommitted changes (read-only git calls)."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()

    status = git("status", "--porcelain", "--", "kldrift")
    return {
        "kldrift_commit": git("rev-parse", "HEAD"),
        "kldrift_uncommitted_changes": None if status is None else bool(status),
    }


def memory_bound(bench: Bench) -> dict[str, Any]:
    """The state kldrift's design keeps at steady state for the base config."""
    config = bench.points["base"].config_data
    slots = sum(
        len(f["edges"]) + 1 + 2 if f["kind"] == "numeric" else len(f["categories"]) + 1 + 2
        for f in config["features"]
    )
    per_window = (data.SIZE_S + data.LATENESS_S) // data.PERIOD_S
    open_panes = per_window + 1
    open_windows = per_window + 1
    keys = 2
    return {
        "formula": "keys x sum over features of (bins + 2) int64 x (open panes + open windows)",
        "keys": keys,
        "slots_per_key": slots,
        "open_panes": open_panes,
        "open_windows": open_windows,
        "bytes": keys * slots * 8 * (open_panes + open_windows),
    }


def targets(bench: Bench) -> dict[str, dict[str, Any]]:
    out = bench.out

    def get(*path: str) -> Any:
        value: Any = out
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def target(text: str, value: Any, met: Callable[[Any], bool]) -> dict[str, Any]:
        return {"target": text, "value": value, "met": None if value is None else bool(met(value))}

    ratios = out.get("ratios", {})
    growth = get("rss_growth_mb")
    allowed = None
    if growth is not None:
        allowed = max(10.0, 0.05 * (growth["start_worker"] + growth["start_prism"]))
    limit = 2 * data.PERIOD_S + data.IDLE_TIMEOUT_S
    return {
        "streaming_vs_raw_consume": target(
            "streaming_eps >= 0.8 x raw_kafka_consume_eps (issue 27; single-threaded kafka-python "
            "with the C CRC)",
            ratios.get("streaming_over_raw_consume"),
            lambda v: v >= 0.8,
        ),
        "replay_vs_numpy_limit": target(
            "replay_eps >= 0.7 x numpy_limit_eps (issue 27: msgspec parse + FeatureBins.count, "
            "no Beam)",
            ratios.get("replay_over_numpy_limit"),
            lambda v: v >= 0.7,
        ),
        "replay_vs_naive": target(
            "replay_eps >= 20 x naive_beam_eps", ratios.get("replay_over_naive"), lambda v: v >= 20
        ),
        "size_period": target(
            "eps at size/period 60 within 1.25x of size/period 1",
            ratios.get("size_period_60_over_1"),
            lambda v: v >= 1 / 1.25,
        ),
        "memory_bounded": target(
            f"RSS growth (worker + Prism) over the steady live run <= {allowed or 0:.0f} MB "
            "(max of 10 MB and 5% of the starting RSS; the design state is "
            f"{memory_bound(bench)['bytes'] / 1024:.1f} KiB)",
            None if growth is None else growth["total"],
            lambda v: v <= (allowed or 0),
        ),
        "keys_1000": target(
            f"K = {max(keys_counts(bench)):,} keys completes; wall time at K = 1,000 within "
            f"{KEYS_TARGETS[1_000]:g}x of K = 2 (issue 27)",
            ratios.get("keys_1000_over_2_wall"),
            lambda v: (
                v <= KEYS_TARGETS[1_000] and str(max(keys_counts(bench))) in out.get("keys", {})
            ),
        ),
        "keys_10000": target(
            f"wall time at K = 10,000 within {KEYS_TARGETS[10_000]:g}x of K = 2 (issue 27; not in "
            "quick mode)",
            ratios.get("keys_10000_over_2_wall"),
            lambda v: v <= KEYS_TARGETS[10_000],
        ),
        "report_latency": target(
            f"report_latency p99 < 2 x period + idle timeout = {limit} s",
            get("report_latency_s", "p99"),
            lambda v: v < limit and not get("report_latency_s", "missing_reports"),
        ),
        "flink_vs_prism": target(
            "flink_p1_eps >= 0.8 x flink_prism_eps (same run, same topic, alternating trials)",
            ratios.get("flink_p1_over_prism"),
            lambda v: v >= 0.8,
        ),
    }


def ratios(out: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    size_period = out.get("scaling", {}).get("size_period", {})
    keys = out.get("keys", {})
    return {
        "streaming_over_raw_consume": ratio(
            out.get("streaming_eps"), out.get("raw_kafka_consume_eps")
        ),
        "replay_over_naive": ratio(out.get("replay_eps"), out.get("naive_beam_eps")),
        "size_period_60_over_1": ratio(size_period.get("60"), size_period.get("1")),
        "keys_1000_over_2_wall": ratio(
            keys.get("1000", {}).get("wall_s"), keys.get("2", {}).get("wall_s")
        ),
        "keys_10000_over_2_wall": ratio(
            keys.get("10000", {}).get("wall_s"), keys.get("2", {}).get("wall_s")
        ),
        "replay_over_numpy_limit": ratio(out.get("replay_eps"), out.get("numpy_limit_eps")),
        "streaming_over_replay": ratio(out.get("streaming_eps"), out.get("replay_eps")),
        "flink_p1_over_prism": ratio(out.get("flink_p1_eps"), out.get("flink_prism_eps")),
        "flink_p2_readers3_over_prism": ratio(
            out.get("flink_p2_readers3_eps"), out.get("flink_prism_eps")
        ),
        **{
            f"streaming_processes_{readers}_over_raw_consume": ratio(
                eps, out.get("raw_kafka_consume_eps")
            )
            for readers, eps in out.get("streaming_processes_eps", {}).items()
        },
        **{
            f"streaming_processes_{readers}_over_streaming": ratio(eps, out.get("streaming_eps"))
            for readers, eps in out.get("streaming_processes_eps", {}).items()
        },
    }


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if unit == "events/s":
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:,.1f}"
    if unit in ("s", "bits"):
        return f"{value:.4g}"
    if unit == "reports/s":
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
    return str(value)


def table(bench: Bench) -> str:
    out, n, trials = bench.out, bench.workload.events, bench.workload.trials
    each = f"median of {trials}"
    rows: list[tuple[str, Any, str, str]] = [
        ("raw_kafka_produce_eps", out.get("raw_kafka_produce_eps"), "events/s", each),
        ("raw_kafka_consume_eps", out.get("raw_kafka_consume_eps"), "events/s", each),
        ("streaming_eps", out.get("streaming_eps"), "events/s", f"kldrift run, {each}"),
        ("replay_eps", out.get("replay_eps"), "events/s", f"kldrift replay, {each}"),
        ("naive_beam_eps", out.get("naive_beam_eps"), "events/s", f"naive Beam, {each}"),
        ("numpy_limit_eps", out.get("numpy_limit_eps"), "events/s", "msgspec + count"),
        (
            "recompute_per_window_s",
            out.get("recompute_per_window_s"),
            "s",
            f"{out.get('extra', {}).get('recompute_events_per_window', '?')} events/window",
        ),
    ]
    flink = out.get("flink", {})
    for name, runner in flink.get("runners", {}).items():
        key = f"flink_{name}_eps" if name == "prism" else f"{name}_eps"
        rows.append((key, runner["eps"], "events/s", f"{runner['label']}, {each}, in turn"))
    for name, runner in flink.get("runners", {}).items():
        process = {"prism": "Prism", "flink_job_server": "Flink job server JVM"}.get(
            runner["runner_process"], "runner"
        )
        rows.append((f"flink.{name}.startup_s", runner["startup_s"], "s", "job start to 1st read"))
        rows.append((f"flink.{name}.seconds", runner["seconds"], "s", "measured span"))
        rows.append((f"flink.{name}.worker_cpu_s", runner["worker_cpu_s"], "s", "in the span"))
        rows.append((f"flink.{name}.runner_cpu_s", runner["runner_cpu_s"], "s", process))
    for group, values in out.get("scaling", {}).items():
        for value, eps in values.items():
            rows.append((f"scaling.{group}={value}", eps, "events/s", "replay"))
    for count, point in out.get("keys", {}).items():
        rows.append(
            (f"keys.K={count}.wall_s", point["wall_s"], "s", f"{point['reports']:,} reports")
        )
        rows.append((f"keys.K={count}.reports_per_s", point["reports_per_s"], "reports/s", ""))
    for name, mb in out.get("peak_rss_mb", {}).items():
        rows.append((f"peak_rss_mb.{name}", mb, "MB", "VmHWM"))
    growth = out.get("rss_growth_mb")
    if growth:
        for part in ("worker", "prism", "total"):
            rows.append(
                (
                    f"rss_growth_mb.{part}",
                    growth[part],
                    "MB",
                    f"over {growth['seconds']:.0f} s live",
                )
            )
    latency = out.get("report_latency_s")
    if latency:
        for p in ("p50", "p99"):
            rows.append(
                (f"report_latency_s.{p}", latency[p], "s", f"{latency['samples']} window reports")
            )
    for name, bits in out.get("drift_check_bits", {}).items():
        rows.append((f"drift_check.{name}", bits, "bits", "median, replay output"))
    for name, value in out.get("extra", {}).items():
        unit = "events/s" if name.endswith("_eps") else "s" if name.endswith("_s") else ""
        if isinstance(value, int | float) and unit:
            rows.append((f"extra.{name}", value, unit, ""))
    for name, value in out.get("ratios", {}).items():
        rows.append((f"ratio.{name}", value, "x", ""))
    width = max(len(r[0]) for r in rows)
    lines = [
        f"kldrift benchmarks ({_mode(bench)}: {n:,} events, {trials} trial(s) each)",
        f"{'figure':<{width}}  {'value':>14}  {'unit':<9} notes",
    ]
    lines.append("-" * len(lines[-1]))
    for name, value, unit, note in rows:
        lines.append(f"{name:<{width}}  {_fmt(value, unit):>14}  {unit:<9} {note}")
    lines.append("")
    lines.append("targets:")
    for name, t in out.get("targets", {}).items():
        verdict = {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]]
        value = t["value"]
        shown = f"{value:.3g}" if isinstance(value, int | float) else "-"
        lines.append(f"  {verdict:<12} {name}: {t['target']} (measured {shown})")
    lines.extend(keys_target_lines(out))
    if bench.errors:
        lines.append("")
        lines.append("errors:")
        lines.extend(f"  {name}: {text.splitlines()[0]}" for name, text in bench.errors.items())
    return "\n".join(lines)


def keys_target_lines(out: dict[str, Any]) -> list[str]:
    """One line per many-keys target: 'keys 10000 vs 2: 5.6x (target <= 10x)'."""
    lines = []
    ratios = out.get("ratios", {})
    for count, limit in KEYS_TARGETS.items():
        value = ratios.get(f"keys_{count}_over_2_wall")
        shown = "not measured" if value is None else f"{value:.1f}x"
        lines.append(f"  keys {count} vs 2: {shown} (target <= {limit:g}x)")
    return lines


# -- main ----------------------------------------------------------------------------------


def _mode(bench: Bench) -> str:
    return "smoke" if bench.workload is data.SMOKE else "quick" if bench.quick else "full"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data, 1 trial (< 3 minutes)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="quick's sections on still less data (about 1.5 minutes): checks the harness, "
        "figures not to be quoted",
    )
    parser.add_argument("--json", metavar="OUT", help="write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (data, job logs)")
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C, so the broker and every job are still stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    if args.smoke:
        sections = tuple(s for s in sections if s not in SMOKE_SKIPS)
    workload = data.SMOKE if args.smoke else data.QUICK if args.quick else data.FULL
    workdir = Path(tempfile.mkdtemp(prefix="kldrift-bench-"))
    bench = Bench(args.quick or args.smoke, workload, workdir, sections)
    bench.out["machine"] = machine()
    runners = {
        "core": section_core,
        "replay": section_replay,
        "naive": section_naive,
        "scaling": section_scaling,
        "keys": section_keys,
        "kafka": section_kafka,
        "flink": section_flink,
        "live": section_live,
    }
    try:
        prepare(bench)
        for name in sections:
            started = time.monotonic()
            try:
                runners[name](bench)
            except Exception as err:
                bench.errors[name] = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
                log(f"{name} failed: {type(err).__name__}: {str(err)[:2000]}")
            log(f"{name} done in {time.monotonic() - started:.0f} s")
    finally:
        if bench.broker is not None:
            bench.broker.stop()
            log("Kafka broker stopped")
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out = bench.out
    out["ratios"] = ratios(out)
    out["targets"] = targets(bench)
    out["memory_bound"] = memory_bound(bench)
    out["machine"]["loadavg_end"] = os.getloadavg()[0]
    out["units"] = UNITS
    out["trials"] = bench.trials
    out["workload"] = {
        "mode": _mode(bench),
        "events": workload.events,
        "trials": workload.trials,
        "event_rate_per_event_time_s": data.RATE,
        "keys": 2,
        "window": {"size_s": data.SIZE_S, "period_s": data.PERIOD_S, "lateness_s": data.LATENESS_S},
        "kafka": {
            "partitions": PARTITIONS,
            "max_delay_s": data.MAX_DELAY_S,
            "idle_timeout_s": data.IDLE_TIMEOUT_S,
        },
        "live": {"seconds": workload.live_s, "rate": workload.live_rate},
        "seed": data.SEED,
    }
    out["processes"] = {
        "prism_pids": [p for p in bench.prism_pids if p is not None]
        + [pid for pid, kind in bench.runner_pids if kind == "prism"],
        "flink_job_server_pids": [pid for pid, kind in bench.runner_pids if kind != "prism"],
        "kafka_broker_pid": bench.broker_pid,
        "left_running": left_running(bench),
    }
    if out["processes"]["left_running"]:
        bench.errors["processes"] = f"still running: {out['processes']['left_running']}"
    out["errors"] = {k: v.splitlines()[0] for k, v in bench.errors.items()}
    out["runtime_s"] = time.monotonic() - began
    print(table(bench))
    print(f"\nruntime: {out['runtime_s']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=_json_default) + "\n")
        print(f"wrote {args.json}")
    return 1 if bench.errors else 0


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def left_running(bench: Bench) -> list[int]:
    """The Prism, Flink job server and broker processes this run started that still run (should
    be none)."""
    runners = [pid for pid, _ in bench.runner_pids]
    pids = [p for p in [*bench.prism_pids, *runners, bench.broker_pid] if p is not None]
    deadline = time.monotonic() + 15
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
