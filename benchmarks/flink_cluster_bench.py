"""Flink session-cluster figures (`kldrift local flink`'s cluster): `kldrift run` events/s with 1 and
2 TaskManagers against Prism on the same pre-loaded topic, and a live checkpointed job's
checkpoint sizes over time with its report latency.

    python -m benchmarks.flink_cluster_bench throughput [--events N] [--json OUT]
    python -m benchmarks.flink_cluster_bench checkpoints [--minutes M] [--json OUT]

Throughput: the measurement of the `kafka` section of benchmarks.run (events/s from the job's
first read to the last data window's first report), one trial each, back to back in one run:
Prism; the cluster with 1 TaskManager at parallelism 1; the same cluster grown to 2
TaskManagers at parallelism 2 with 3 readers. Each Flink trial stages the job server's launcher
jar only, as `kldrift run` does for `kldrift local flink`'s cluster. Checkpoints: a live job at 100 events/s on a 1-TaskManager cluster,
checkpointing every 10 s to RocksDB; every 30 s the newest completed checkpoint's full state size
and incremental size (Flink REST), and each report's lag behind its window's end (p50/p99).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import data
from benchmarks.flink_bench import PRISM, Runner, preload, trials_over
from benchmarks.kafka_bench import PARTITIONS, Job, LiveProducer, ReportTail, log
from kldrift.local.flink_cluster import STAGING_ARGS, FlinkCluster
from kldrift.local.kafka import LocalKafka, create_topics

CHECKPOINT_S = 10
SAMPLE_S = 30


def _cluster_runner(name: str, label: str, cluster: FlinkCluster, parallelism: int) -> Runner:
    return Runner(
        name,
        label,
        (
            "--runner=FlinkRunner",
            f"--flink_master={cluster.rest}",
            *cluster.environment_args(),
            *STAGING_ARGS,
            f"--parallelism={parallelism}",
            "--job_server_timeout=120",
        ),
        {"readers": PARTITIONS} if parallelism > 1 else {},
    )


def throughput(bootstrap: str, work: Path, events: int) -> dict[str, Any]:
    loaded = preload(bootstrap, work, events, "flink-cluster")
    cluster = FlinkCluster(work / "flink", taskmanagers=1, slots=2)
    out: dict[str, Any] = {"events": events}
    try:
        cluster.start()
        one = _cluster_runner("cluster_tm1_p1", "cluster, 1 TaskManager, p1", cluster, 1)
        runs = trials_over(bootstrap, work, loaded, (PRISM, one))
        cluster.start_taskmanager(1)
        cluster.wait_for_taskmanagers(2, 120)
        two = _cluster_runner("cluster_tm2_p2", "cluster, 2 TaskManagers, p2", cluster, 2)
        runs += trials_over(bootstrap, work, loaded, (two,))
    finally:
        cluster.stop()
    for trial in runs:
        out[trial["runner"]] = {k: trial[k] for k in ("eps", "seconds", "startup_s")}
    for name in ("cluster_tm1_p1", "cluster_tm2_p2"):
        out[name]["vs_prism"] = out[name]["eps"] / out["prism"]["eps"]
    return out


def checkpoints(bootstrap: str, work: Path, minutes: float, progress: Path | None) -> dict:
    topic = "bench.flinkcluster.live"
    create_topics(bootstrap, {topic: PARTITIONS})
    features = data.base_features()
    baseline = data.write_baseline(work / "baseline-live.json", features, data.training_events())
    config = data.config(name="bench-flink-cluster-live", features=features, size_s=60, period_s=10)
    cluster = FlinkCluster(work / "flink-live", taskmanagers=1, slots=2).start()
    runner_args = (
        *_cluster_runner("live", "live", cluster, 1).beam_args,
        f"--checkpointing_interval={CHECKPOINT_S * 1000}",
    )
    job = Job(bootstrap, work, "live", topic, config, runner_args=runner_args)
    producer = LiveProducer(bootstrap, topic, rate=100.0, drift_at=time.time() + minutes * 30)
    producer.start()
    samples: list[dict[str, Any]] = []
    tail: ReportTail | None = None
    try:
        job.start(baseline)
        tail = ReportTail(bootstrap, job.kafka["output_topic"])
        tail.start()
        job_id = _wait_running(cluster, job)
        began = time.time()
        while time.time() - began < minutes * 60:
            if not job.alive():
                raise RuntimeError(f"the live job ended: {job.failure()}")
            time.sleep(SAMPLE_S)
            sample = _checkpoint_sample(cluster, job_id, time.time() - began)
            samples.append(sample)
            log(f"checkpoints: {json.dumps(sample)}")
            if progress is not None:
                with progress.open("a") as out:
                    out.write(json.dumps(sample) + "\n")
    finally:
        producer.stop.set()
        job.stop()
        if tail is not None:
            tail.stop.set()
            tail.join(10)
        cluster.stop()
    lags = sorted(
        arrived - r["window_end"]
        for arrived, r in (tail.reports if tail else [])
        if r["window_end"] > began + 60
    )
    return {
        "minutes": minutes,
        "checkpoint_interval_s": CHECKPOINT_S,
        "samples": samples,
        "report_lag_s_p50": statistics.median(lags) if lags else None,
        "report_lag_s_p99": lags[int(0.99 * (len(lags) - 1))] if lags else None,
        "reports": len(lags),
    }


def _wait_running(cluster: FlinkCluster, job: Job, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not job.alive():
            raise RuntimeError(f"the live job ended: {job.failure()}")
        running = cluster.running_jobs()
        if running:
            return running[0]
        time.sleep(1)
    raise RuntimeError("the live job never ran on the cluster")


def _checkpoint_sample(cluster: FlinkCluster, job_id: str, elapsed_s: float) -> dict[str, Any]:
    stats = cluster.get(f"/jobs/{job_id}/checkpoints")
    latest = stats["latest"]["completed"] or {}
    return {
        "elapsed_s": round(elapsed_s),
        "completed": stats["counts"]["completed"],
        "failed": stats["counts"]["failed"],
        "state_bytes": latest.get("state_size"),
        "incremental_bytes": latest.get("checkpointed_size"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["throughput", "checkpoints"])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--progress", type=Path, help="checkpoints: append each sample here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kldrift-flink-cluster-bench-"))
    broker = LocalKafka(data_dir=work / "kafka")
    broker.start()
    result: dict[str, Any] = {"load_average": os.getloadavg()}
    try:
        if args.what == "throughput":
            result["throughput"] = throughput(broker.bootstrap, work, args.events)
        else:
            result["checkpoints"] = checkpoints(broker.bootstrap, work, args.minutes, args.progress)
        result["load_average_after"] = os.getloadavg()
    finally:
        broker.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
