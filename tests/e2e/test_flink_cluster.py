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
checkpoint) is reported identically. A second test, opt-in (KLDRIFT_TEST_FLINK_JM_KILL=1, ~4 min),
kills the JobManager instead and restores the job's retained checkpoint on a restarted one."""

from __future__ import annotations

import os
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
REPORTS_STOP_S = 15
"""Reports may come this long after the JobManager is killed: until the TaskManagers' heartbeat
to it times out (5 s) and they fail their tasks, plus what was in flight."""
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


def _restored_after(cluster: FlinkCluster, job_id: str, t: float) -> dict[str, Any]:
    """The job's restore (REST ``checkpoints.latest.restored``) once it happened after time `t`."""
    found: dict[str, Any] = {}

    def restored() -> bool:
        stats = _polled(cluster, f"/jobs/{job_id}/checkpoints")
        latest = stats["latest"]["restored"] if stats else None
        if latest and latest["restore_timestamp"] / 1000 > t:
            found.update(latest)
        return bool(found)

    wait_for(restored, 120, "the job restored after the kill")
    return found


def _reported_since(tail: ReportTail, ms: int) -> bool:
    """A report reached the topic at or after `ms` (its CreateTime, epoch milliseconds)."""
    tail.poll()
    return any(t >= ms for t in tail.arrived_ms)


def _completed_checkpoints(cluster: FlinkCluster, job_id: str) -> int:
    checkpoints = _polled(cluster, f"/jobs/{job_id}/checkpoints")
    return 0 if checkpoints is None else int(checkpoints["counts"]["completed"])


def _staged_bytes(cluster: FlinkCluster, job_id: str) -> int:
    """The bytes of the job's files on the JobManager's blob server (its staged jars)."""
    files = (cluster.dir / "tmp").glob(f"blobStore-*/job_{job_id}/*")
    return sum(f.stat().st_size for f in files if f.is_file())


def _live_job(tmp_path: Path, bootstrap: str) -> tuple[Path, LiveEvents, ReportTail]:
    """A job's config (topics of its own, resuming from committed offsets), its live events
    (started) and a tail of its report topic."""
    kafka = job_kafka(
        bootstrap,
        "cluster",
        uuid.uuid4().hex[:8],
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
        readers=PARTITIONS,
    )
    name = kafka["input_topic"].replace("-events-", "-")
    config = latency_job(tmp_path, name, kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(bootstrap, {kafka["input_topic"]: PARTITIONS})
    events = LiveEvents(bootstrap, kafka["input_topic"], PARTITIONS, seed=24).start()
    return config, events, ReportTail(bootstrap, kafka["output_topic"])


def _every_window_exact(
    tmp_path: Path, config: Path, events: LiveEvents, tail: ReportTail, event_t: float
) -> tuple[int, int]:
    """Every window holding events is reported, every report with its window's exact count (an
    error names each wrong one by its start relative to `event_t`), a window reported twice only
    identically (at-least-once output: the reports since the restored checkpoint), and each report
    equals `kldrift replay`'s of the same events. Returns (windows checked, reports duplicated)."""
    expected = window_counts(events.sent, SIZE_S, PERIOD_S)
    reports: list[DriftReport] = tail.reports
    wrong = [
        f"{r.key} window {r.window_start.timestamp() - event_t:+.1f} s from the event, "
        f"revision {r.revision}: count {r.count}, expected {expected[(r.key, r.window_start.timestamp())]}"
        for r in reports
        if r.count != expected[(r.key, r.window_start.timestamp())]
    ]
    assert not wrong, "\n".join(wrong)
    reported = {(r.key, r.window_start.timestamp()) for r in reports}
    assert set(expected) <= reported, sorted(set(expected) - reported)[:5]
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
    batch = replayed_reports(tmp_path, config, events.sent)
    assert {r.message_key for r in reports} == set(batch)
    for report in reports:
        want = batch[report.message_key]
        assert report.count == want.count
        assert report.kl_bits == pytest.approx(want.kl_bits, abs=1e-12, rel=0)
    return len(expected), sum(n - 1 for n in duplicated.values())


class _Run:
    """One submission of the job: `kldrift run` and its Flink job's id."""

    def __init__(self, job: Job, job_id: str) -> None:
        self.job, self.id = job, job_id


@pytest.mark.timeout(600)  # three submissions of ~40-80 s each on 2 loaded cores
def test_taskmanager_loss_and_rescaling_from_a_savepoint_keep_every_window_exact(
    tmp_path: Path, kafka_bootstrap: str, cluster: tuple[FlinkCluster, list[str]]
) -> None:
    flink_cluster, printed = cluster
    config, events, tail = _live_job(tmp_path, kafka_bootstrap)
    args = ("--config", str(config), "--")
    marks: dict[str, float] = {"began": time.time()}
    savepoints: list[str] = []
    runs: list[_Run] = []

    def mark(name: str) -> None:
        marks[name] = time.time()
        print(f"cluster test: {name} at {marks[name] - marks['began']:.1f} s", flush=True)

    def submitted(job: Job, name: str) -> _Run:
        runs.append(_Run(job, _running_job(flink_cluster)))
        mark(f"{name}_running")
        return runs[-1]

    def carried_across(stopped: str) -> bool:
        """A window still open when the previous run's savepoint completed is reported."""
        return _reported_after(tail, marks[stopped] - SIZE_S)

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
            mark("kill")
            flink_cluster.kill_taskmanager(victim)
            restored = _restored_after(flink_cluster, run_c.id, marks["kill"])
            since_ms = restored["restore_timestamp"]
            wait_for(lambda: _reported_since(tail, since_ms), 120, "a report of the restored job")
            first_ms = min(t for t in tail.arrived_ms if t >= since_ms)
            # The window of the last event, sent after the kill, closes on the restarted job.
            last_window_reported(events, tail, SIZE_S, PERIOD_S, timeout_s=90)
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

    windows, duplicated = _every_window_exact(tmp_path, config, events, tail, marks["kill"])
    restore_s, report_s = since_ms / 1000 - marks["kill"], first_ms / 1000 - marks["kill"]
    spans = ", ".join(f"{n} {marks[n + '_running'] - marks[n + '_submit']:.1f} s" for n in "abc")
    print(
        f"flink cluster: {windows} windows checked, 0 wrong, 0 missing; "
        f"{duplicated} reports duplicated identically; "
        f"{victim} killed, job restored checkpoint {restored['id']} {restore_s:.1f} s later, "
        f"its first report {report_s:.1f} s after the kill; savepoints restored p{P_A} -> p{P_B} -> p{P_C}; submission to all "
        f"tasks running: {spans}; {staged} bytes staged"
    )


@pytest.mark.skipif(
    not os.environ.get("KLDRIFT_TEST_FLINK_JM_KILL"),
    reason="~4 min (kldrift run takes up to ~100 s to give up on a lost JobManager): "
    "KLDRIFT_TEST_FLINK_JM_KILL=1 runs it",
)
@pytest.mark.timeout(600)
def test_jobmanager_loss_without_ha_ends_the_run_and_its_checkpoint_restores_exactly(
    tmp_path: Path, kafka_bootstrap: str, cluster: tuple[FlinkCluster, list[str]]
) -> None:
    """What deploy/README.md says of a lost JobManager without HA: reports stop, `kldrift run`
    exits 1 naming the failure in one line, a restarted JobManager knows no job, and the newest
    retained checkpoint restores (`--savepoint_path`) with every window exact."""
    flink_cluster, printed = cluster
    config, events, tail = _live_job(tmp_path, kafka_bootstrap)
    args = ("--config", str(config), "--")
    try:
        with streaming_job(*args, *_run_args(printed, 1, None)) as run:
            job_id = _running_job(flink_cluster)
            wait_for(lambda: bool(tail.poll()), 120, "the first report")
            wait_for(lambda: _completed_checkpoints(flink_cluster, job_id) >= 2, 60, "checkpoints")
            killed = time.time()
            flink_cluster.kill_jobmanager()
            gave_up_s = wait_ended(run, 240)
        flink_cluster.start_jobmanager()
        flink_cluster.wait_for_taskmanagers(1, 120)
        assert flink_cluster.get("/jobs")["jobs"] == []  # no HA: the new JobManager knows no job
        tail.poll()
        late = [t / 1000 - killed for t in tail.arrived_ms if t / 1000 > killed + REPORTS_STOP_S]
        chk = _newest_checkpoint(flink_cluster.checkpoints / job_id)
        with streaming_job(*args, *_run_args(printed, 1, chk.as_uri())) as resumed:
            resumed_id = _running_job(flink_cluster)
            wait_for(
                lambda: _reported_after(tail, killed - SIZE_S), 120, "a window open at the kill"
            )
            last_window_reported(events, tail, SIZE_S, PERIOD_S, timeout_s=90)
    finally:
        events.stop()
        tail.close()

    assert run.returncode == 1, run.output[-3000:]
    failure = [line for line in run.output.splitlines() if "job ended (FAILED)" in line]
    assert len(failure) == 1 and failure[0].startswith("kldrift run:"), run.output[-3000:]
    assert not late, f"reports {late} s after the JobManager was killed"
    assert resumed.returncode == STOPPED_BY_CTRL_C, resumed.output[-3000:]
    jm_log = (flink_cluster.log_dir / "jobmanager.log").read_text()
    assert re.search(rf"Starting job {resumed_id} from savepoint \S*{re.escape(str(chk))}", jm_log)
    windows, duplicated = _every_window_exact(tmp_path, config, events, tail, killed)
    print(
        f"flink cluster, JobManager killed: kldrift run exited 1 after {gave_up_s:.0f} s; "
        f"{chk.name} restored; {windows} windows checked, 0 wrong, 0 missing; "
        f"{duplicated} reports duplicated identically"
    )


def _reported_after(tail: ReportTail, t: float) -> bool:
    """A window starting after `t` is reported."""
    return any(r.window_start.timestamp() > t for r in tail.poll())


def _newest_checkpoint(job_dir: Path) -> Path:
    """The newest complete retained checkpoint (``chk-N`` with a ``_metadata``) of a job."""
    done = [d for d in job_dir.glob("chk-*") if (d / "_metadata").is_file()]
    assert done, f"no completed checkpoint in {job_dir}"
    return max(done, key=lambda d: int(d.name.split("-")[1]))
