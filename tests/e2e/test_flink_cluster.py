"""kldrift on a standalone Flink 1.19 session cluster, as production runs it: a JobManager and two
TaskManagers as separate JVMs, started, checked and stopped with `kldrift local flink
start|status|stop` (RocksDB state, checkpoints every 2 s, Python steps in the cluster's worker
pool, EXTERNAL), a real broker and a live stream.

One job's life, in three submissions, each with the flags `kldrift local flink start` prints (so
staging only the job server's launcher jar): run A at parallelism 2 is stopped with a savepoint
(Flink REST `POST /jobs/:id/stop`); run B restores it at parallelism 1 (2 -> 1) and is stopped
with a savepoint in turn; run C restores that at parallelism 2 (1 -> 2), and the TaskManager
running C's reader is SIGKILLed mid-stream: Flink restarts the job from its last completed
checkpoint on the survivor. Across all of it every window holding events is reported with exactly
the count produced (worked out here from the events sent), each report equals `kldrift replay`'s
on the same events, and a window reported twice (after the kill: the reports since the
checkpoint) is reported identically."""

from __future__ import annotations

import re
import time
import urllib.error
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    Job,
    LiveEvents,
    ReportTail,
    job_kafka,
    last_window_reported,
    latency_job,
    replayed_reports,
    run_cli,
    streaming_job,
    wait_ended,
    wait_for,
    window_counts,
)

from kldrift.local import flink, procs
from kldrift.local.flink_cluster import FlinkCluster
from kldrift.local.kafka import create_topics
from kldrift.schemas.report import DriftReport

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 6, 2, 2
PARTITIONS = 2
CHECKPOINT_MS = 2000
P_A, P_B, P_C = 2, 1, 2
"""The parallelism of run A, of run B restored from A's savepoint, of run C restored from B's."""
STAGED_MAX_BYTES = 1 << 20
"""What a job may stage on the JobManager's blob server (the launcher jar is ~20 KB; all of the
job server's jars would be ~157 MB)."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlinkCluster, list[str]]]:
    """The cluster `kldrift local flink start --taskmanagers 2` starts, with the `kldrift run`
    flags it prints; `stop` (checked to leave no process of it behind) afterwards."""
    flink.ensure_installed()  # the job server; both are installed by the set-up
    directory = tmp_path_factory.mktemp("flink")
    where = ("--data-dir", str(directory))
    started = run_cli("local", "flink", "start", "--taskmanagers", "2", *where)
    try:
        assert started.returncode == 0, started.stdout + started.stderr[-3000:]
        assert re.search(r"flink: started Flink 1\.19\.3 with 2 TaskManager\(s\)", started.stdout)
        run_line = next(x for x in started.stdout.splitlines() if "kldrift run --config C --" in x)
        status = run_cli("local", "flink", "status", *where)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "2 TaskManager(s), 4/4 slots free, 0 job(s) running" in status.stdout
        yield FlinkCluster(directory), run_line.split(" -- ", 1)[1].split()
    finally:
        groups = set(FlinkCluster(directory).pids())
        stopped = run_cli("local", "flink", "stop", *where)
    assert stopped.returncode == 0 and "flink: stopped" in stopped.stdout, stopped.stdout
    assert run_cli("local", "flink", "status", *where).stdout.strip() == "flink: not running"
    # Each process was started in a group of its own (the pool's SDK workers in the pool's).
    left = [p.pid for p in procs.live_processes() if int(p.fields[2]) in groups]
    assert not left, f"processes of the stopped cluster still run: {left}"


def _run_args(printed: list[str], parallelism: int, savepoint: str | None) -> list[str]:
    """The flags `start` printed, checkpointing every CHECKPOINT_MS, at `parallelism`."""
    return [
        *(a for a in printed if not a.startswith("--checkpointing_interval=")),
        f"--checkpointing_interval={CHECKPOINT_MS}",
        f"--parallelism={parallelism}",
        "--job_server_timeout=60",
        *([f"--savepoint_path={savepoint}"] if savepoint else []),
    ]


def _polled(cluster: FlinkCluster, path: str) -> Any:
    """`cluster.get(path)` for a polling loop: None when the JobManager does not answer in time
    (it is slow while it deploys a job on loaded cores)."""
    try:
        return cluster.get(path)
    except (TimeoutError, urllib.error.URLError, ConnectionError):
        return None


def _running_job(cluster: FlinkCluster, timeout_s: float = 300) -> str:
    """The id of the one job RUNNING with all its tasks running."""
    found: list[str] = []

    def running() -> bool:
        overview = _polled(cluster, "/jobs/overview")
        if overview is None:
            return False
        jobs = overview["jobs"]
        found[:] = [
            j["jid"]
            for j in jobs
            if j["state"] == "RUNNING" and j["tasks"]["running"] == j["tasks"]["total"]
        ]
        return len(found) == 1

    wait_for(running, timeout_s, "one job with all its tasks running on the cluster")
    return found[0]


def _reader_taskmanager(cluster: FlinkCluster, job_id: str) -> str:
    """The TaskManager (`tm-N`) running the job's first vertex (Impulse -> the Kafka read)."""
    source = cluster.get(f"/jobs/{job_id}", timeout_s=60)["vertices"][0]["id"]
    hosts = cluster.get(f"/jobs/{job_id}/vertices/{source}/taskmanagers", timeout_s=60)[
        "taskmanagers"
    ]
    return str(hosts[0]["taskmanager-id"])


def _completed_checkpoints(cluster: FlinkCluster, job_id: str) -> int:
    checkpoints = _polled(cluster, f"/jobs/{job_id}/checkpoints")
    return 0 if checkpoints is None else int(checkpoints["counts"]["completed"])


def _staged_bytes(cluster: FlinkCluster, job_id: str) -> int:
    """The bytes of the job's files on the JobManager's blob server (its staged jars)."""
    files = (cluster.dir / "tmp").glob(f"blobStore-*/job_{job_id}/*")
    return sum(f.stat().st_size for f in files if f.is_file())


class _Run:
    """One submission of the job: `kldrift run` and its Flink job's id."""

    def __init__(self, job: Job, job_id: str) -> None:
        self.job, self.id = job, job_id


@pytest.mark.timeout(600)  # three submissions of ~40-80 s each on 2 loaded cores
def test_taskmanager_loss_and_rescaling_from_a_savepoint_keep_every_window_exact(
    tmp_path: Path, kafka_bootstrap: str, cluster: tuple[FlinkCluster, list[str]]
) -> None:
    flink_cluster, printed = cluster
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "cluster",
        run_id,
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
        readers=PARTITIONS,
    )
    config = latency_job(tmp_path, f"cluster-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: PARTITIONS})
    args = ("--config", str(config), "--")
    events = LiveEvents(kafka_bootstrap, kafka["input_topic"], PARTITIONS, seed=24).start()
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    marks: dict[str, float] = {"began": time.time()}
    savepoints: list[str] = []
    runs: list[_Run] = []

    def mark(name: str) -> None:
        marks[name] = time.time()
        print(f"cluster test: {name} at {marks[name] - marks['began']:.1f} s", flush=True)

    def reported_after(t: float) -> bool:
        return any(r.window_start.timestamp() > t for r in tail.poll())

    def submitted(job: Job, name: str) -> _Run:
        runs.append(_Run(job, _running_job(flink_cluster)))
        mark(f"{name}_running")
        return runs[-1]

    def carried_across(stopped: str) -> bool:
        """A window still open when the previous run's savepoint completed is reported."""
        return reported_after(marks[stopped] - SIZE_S)

    def submit(stack: ExitStack, name: str, parallelism: int) -> _Run:
        """Submit a run (restoring the newest savepoint); the previous run, stopped with a
        savepoint, may still be exiting meanwhile: it is awaited once this one runs."""
        restore = savepoints[-1] if savepoints else None
        marks[f"{name}_submit"] = time.time()
        job = stack.enter_context(streaming_job(*args, *_run_args(printed, parallelism, restore)))
        run = submitted(job, name)
        if len(runs) > 1:
            wait_ended(runs[-2].job, 60)
            mark(f"{name}_previous_exited")
        return run

    def stop_with_savepoint(run: _Run, name: str) -> None:
        mark(f"{name}_stop")
        savepoints.append(flink_cluster.stop_with_savepoint(run.id))
        mark(f"{name}_stopped")

    try:
        with ExitStack() as stack:
            # A at P_A, stopped with a savepoint; B restores it at P_B, stopped likewise.
            run_a = submit(stack, "a", P_A)
            wait_for(lambda: bool(tail.poll()), 120, "run A's first report")
            stop_with_savepoint(run_a, "a")
            run_b = submit(stack, "b", P_B)
            wait_for(
                lambda: carried_across("a_stopped"), 120, "B's report of a window open at A's stop"
            )
            stop_with_savepoint(run_b, "b")
            # C restores B's at P_C; the TaskManager running its reader killed mid-stream.
            run_c = submit(stack, "c", P_C)
            staged = _staged_bytes(flink_cluster, run_c.id)
            wait_for(
                lambda: carried_across("b_stopped"), 120, "C's report of a window open at B's stop"
            )
            wait_for(lambda: _completed_checkpoints(flink_cluster, run_c.id) >= 2, 60, "C's")
            victim = _reader_taskmanager(flink_cluster, run_c.id)
            before_kill = len(tail.poll())
            mark("kill")
            flink_cluster.kill_taskmanager(victim)
            wait_for(lambda: len(tail.poll()) > before_kill, 120, "a report after the kill")
            marks["first_report_after_kill"] = tail.arrived_ms[before_kill] / 1000
            # The window of the last event, sent after the kill, closes on the restarted job.
            last_window_reported(events, tail, SIZE_S, PERIOD_S, timeout_s=90)
            checkpoints = flink_cluster.get(f"/jobs/{run_c.id}/checkpoints", timeout_s=60)
            restored = checkpoints["latest"]["restored"]
    finally:
        events.stop()
        tail.close()

    # The stops with a savepoint ended A and B by themselves (their jobs FINISHED); C was Ctrl-C'd.
    assert [run.job.returncode for run in runs] == [0, 0, STOPPED_BY_CTRL_C], runs[-1].job.output
    jm_log = (flink_cluster.log_dir / "jobmanager.log").read_text()
    for run, savepoint in zip((run_b, run_c), savepoints, strict=True):
        assert re.search(rf"Starting job {run.id} from savepoint {re.escape(savepoint)}", jm_log)
    # After the kill, C restarted from a completed checkpoint (not its savepoint, not afresh).
    assert restored is not None and restored["is_savepoint"] is False, restored
    assert f"{victim} " in jm_log
    # The job staged its launcher jar only (the runner's jars came from this machine's disk).
    assert 0 < staged < STAGED_MAX_BYTES, staged

    # Every window holding events is reported, every report with its window's exact count.
    expected = window_counts(events.sent, SIZE_S, PERIOD_S)
    reports: list[DriftReport] = tail.reports
    wrong = [
        f"{r.key} window {r.window_start.timestamp() - marks['kill']:+.1f} s from the kill, "
        f"revision {r.revision}: count {r.count}, expected {expected[(r.key, r.window_start.timestamp())]}"
        for r in reports
        if r.count != expected[(r.key, r.window_start.timestamp())]
    ]
    assert not wrong, "\n".join(wrong)
    reported = {(r.key, r.window_start.timestamp()) for r in reports}
    assert set(expected) <= reported, sorted(set(expected) - reported)[:5]
    # Reported twice only identically (at-least-once output: the reports since the checkpoint).
    first_seen: dict[tuple, DriftReport] = {}
    for report in reports:
        window = (report.key, report.window_start.timestamp(), report.revision)
        if window in first_seen:
            assert (report.count, report.kl_bits) == (
                first_seen[window].count,
                first_seen[window].kl_bits,
            )
        first_seen.setdefault(window, report)
    duplicated = Counter((r.message_key, r.revision) for r in reports)

    # The same events replayed in batch: the same count and divergence for every report.
    batch = replayed_reports(tmp_path, config, events.sent)
    assert {r.message_key for r in reports} == set(batch)
    for report in reports:
        want = batch[report.message_key]
        assert report.count == want.count
        assert report.kl_bits == pytest.approx(want.kl_bits, abs=1e-12, rel=0)

    recovery_s = marks["first_report_after_kill"] - marks["kill"]
    spans = ", ".join(f"{n} {marks[n + '_running'] - marks[n + '_submit']:.1f} s" for n in "abc")
    print(
        f"flink cluster: {len(expected)} windows checked, 0 wrong, 0 missing; "
        f"{sum(n - 1 for n in duplicated.values())} reports duplicated identically; "
        f"{victim} killed, next report {recovery_s:.1f} s later, job restored checkpoint "
        f"{restored['id']}; savepoints restored p{P_A} -> p{P_B} -> p{P_C}; submission to all "
        f"tasks running: {spans}; {staged} bytes staged"
    )
