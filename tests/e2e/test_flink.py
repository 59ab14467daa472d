"""`kldrift run` on Beam's FlinkRunner: a real broker, an embedded Flink cluster in Beam's Flink job
server (``--flink_master=[local]``) and the Python SDK harness in LOOPBACK. Its reports agree with
`kldrift replay` on the same events, and no job server JVM is left running afterwards.
It also proves SlidingKLDivergence uses only standard WindowFns: the Flink runner's Java side
rejects pickled Python ones (`Unknown or unsupported WindowFn: beam:window_fn:pickled_python:v1`)."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml
from _jobs import STOPPED_BY_CTRL_C, ReportTail, job_kafka, run_cli, streaming_job
from kafka import KafkaConsumer, KafkaProducer

from kldrift.local import flink, procs
from kldrift.local.kafka import create_topics
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options
from kldrift.schemas.report import DriftReport
from kldrift.synthetic import SyntheticStream, demo_config, training_lines

SIZE_S, PERIOD_S, LATENESS_S = 10, 5, 5
PARTITIONS = 3
FEATURES = ("latency_ms", "amount", "payload.country", "device")


def test_options_use_the_installed_job_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """FlinkRunner gets the set-up's jar (no run-time download) and LOOPBACK; a given jar wins."""
    monkeypatch.setenv("KLDRIFT_FLINK_JOB_SERVER_JAR", "/opt/job-server.jar")
    for runner in ("FlinkRunner", "flink"):
        args = local_runner_args(["--runner", runner])
        opts = pipeline_options(args, streaming=True).get_all_options()
        assert opts["flink_job_server_jar"] == "/opt/job-server.jar"
        if runner == "FlinkRunner":  # for "flink", Beam's FlinkRunner picks LOOPBACK itself
            assert opts["environment_type"] == "LOOPBACK"
        assert opts["streaming"] is True
    given = pipeline_options(
        local_runner_args(["--runner=FlinkRunner", "--flink_job_server_jar=/x.jar"]), streaming=True
    ).get_all_options()
    assert given["flink_job_server_jar"] == "/x.jar"
    prism = pipeline_options(
        local_runner_args(["--runner=PrismRunner", "--prism_location=/p"]), streaming=False
    ).get_all_options()
    assert prism["flink_job_server_jar"] is None


def test_launcher_jar_manifest(tmp_path: Path) -> None:
    import zipfile

    names = [f"dependency-number-{i}-with-a-long-name-1.0.jar" for i in range(40)]
    jar = flink.write_launcher_jar(tmp_path / flink.JAR_NAME, "lib", names)
    with zipfile.ZipFile(jar) as archive:
        raw = archive.read("META-INF/MANIFEST.MF")
        assert archive.read("simplelogger.properties")
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 72 for line in lines)
    # Unfold continuation lines as the JDK does.
    unfolded: list[str] = []
    for line in lines:
        if line.startswith(b" "):
            unfolded[-1] += line[1:].decode()
        elif line:
            unfolded.append(line.decode())
    attrs = dict(line.split(": ", 1) for line in unfolded)
    assert attrs["Main-Class"] == flink.JOB_SERVER_MAIN
    assert attrs["Class-Path"].split() == [f"lib/{n}" for n in names]
    assert "java.base/java.util" in attrs["Add-Opens"].split()


def _job_server_pids(under: int | None = None) -> set[int]:
    """Live processes whose command line names the job server launcher jar; with `under`, only
    descendants of that process (another test may run its own job server meanwhile)."""
    parents = {process.pid: process.ppid for process in procs.live_processes()}
    found = {pid for pid in parents if flink.JAR_NAME in (procs.cmdline(pid) or "")}
    if under is None:
        return found

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == under:
                return True
            pid = parents.get(pid, 0)
        return False

    return {pid for pid in found if descends(pid)}


def _windows_of(t: float) -> list[int]:
    last = math.floor(t / PERIOD_S) * PERIOD_S
    return [last - i * PERIOD_S for i in range(SIZE_S // PERIOD_S)]


@pytest.fixture(scope="module")
def job_server_jar() -> Path:
    # The set-up installs it; a failure to install is a failure (FlinkSetupError says why).
    return flink.ensure_installed()


@pytest.mark.services
def test_run_on_flink_matches_replay(
    tmp_path: Path, kafka_bootstrap: str, job_server_jar: Path
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap, "flink", run_id, start_from="earliest", idle_timeout="5s", max_delay="3s"
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            demo_config(
                name="flink",
                size=f"{SIZE_S}s",
                period=f"{PERIOD_S}s",
                allowed_lateness=f"{LATENESS_S}s",
                kafka=kafka,
                baseline=str(tmp_path / "baseline.json"),
            )
        )
    )
    training = tmp_path / "training.jsonl"
    training.write_bytes(b"\n".join(training_lines(5_000)) + b"\n")
    built = run_cli(
        "baseline", "--config", str(config_path), "--input", str(training),
        "--output", str(tmp_path / "baseline.json"),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    create_topics(
        kafka_bootstrap,
        {kafka["input_topic"]: PARTITIONS, kafka["output_topic"]: 1, kafka["dead_letter_topic"]: 1},
    )

    # Event time starts ~25 s after now: the idle rule (watermark follows wall-clock time minus
    # 8 s on a quiet partition) cannot close a window before the job has read its events, however
    # slowly Flink starts; it closes them all once wall-clock time has passed the data.
    t0 = math.ceil((time.time() + 25) / PERIOD_S) * PERIOD_S
    stream = SyntheticStream(
        start=t0, duration=2 * PERIOD_S, rate=30, drift_at=t0 + PERIOD_S, drift_size=1.5, seed=3
    )
    lines = list(stream.lines())
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i, line in enumerate(lines):
        producer.send(kafka["input_topic"], value=line, partition=i % PARTITIONS)
    producer.flush()
    producer.close()
    last_window = _windows_of(float(stream.event_times()[-1]))[0]

    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    started: set[int] = set()  # the job servers this test's `kldrift run` started
    began = time.monotonic()
    try:
        with streaming_job(
            "--config", str(config_path), "--",
            "--runner", "FlinkRunner", "--flink_master=[local]", "--parallelism=1",
        ) as job:  # fmt: skip
            # The last window closes ~8 s after wall-clock time passes its end (t0 + 15 s).
            deadline = time.monotonic() + (t0 + 2 * SIZE_S - time.time()) + 90
            while not tail.has(last_window):
                started |= _job_server_pids(under=job.process.pid)
                if job.process.poll() is not None:
                    raise AssertionError(f"kldrift run exited early ({job.process.returncode})")
                if time.monotonic() > deadline:
                    seen = sorted({(r.window_start.timestamp() - t0) for r in tail.reports})
                    raise AssertionError(
                        f"timed out waiting for the last window's report; seen {seen}"
                    )
                time.sleep(0.3)
            time.sleep(2)  # other keys' reports for that window
            tail.drain()
    finally:
        tail.close()
    elapsed = time.monotonic() - began
    reports = tail.reports
    output = job.output

    # No job server JVM outlives the job (Beam stops it when `kldrift run` exits).
    assert started, "no Flink job server JVM was seen under kldrift run"
    deadline = time.monotonic() + 15
    while (_job_server_pids() & started) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not (_job_server_pids() & started), "a Flink job server JVM was left running"

    assert job.returncode == STOPPED_BY_CTRL_C, output[-4000:]
    assert "on FlinkRunner" in output and "kldrift run: stopped" in output, output[-4000:]
    # Beam's Flink job service serves no metrics for a cancelled job: said, not printed as zeros.
    assert "totals: not available from FlinkRunner" in output, output[-4000:]
    assert job.totals == {}

    # One revision-0 report per (key, feature, window) that received data, and nothing else.
    events = [json.loads(line) for line in lines]
    expected = {
        (e["model"], feature, float(start))
        for e in events
        for feature in FEATURES
        for start in _windows_of(e["ts"])
    }
    revision0 = Counter(
        (r.key, r.feature, r.window_start.timestamp()) for r in reports if r.revision == 0
    )
    assert set(revision0) == expected
    assert max(revision0.values()) == 1, "a window reported revision 0 twice"
    assert all(r.revision == 0 for r in reports), "late panes without late data"

    # The same events replayed in batch give the same counts and divergences.
    events_file = tmp_path / "events.jsonl"
    events_file.write_bytes(b"\n".join(lines) + b"\n")
    replay_out = tmp_path / "replay.jsonl"
    replayed = run_cli(
        "replay", "--config", str(config_path), "--input", str(events_file),
        "--output", str(replay_out),
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    expected_reports = [
        DriftReport.from_json_bytes(line) for line in replay_out.read_bytes().split(b"\n") if line
    ]
    actual = {r.message_key: r for r in reports}
    assert set(actual) == {r.message_key for r in expected_reports}
    for want in expected_reports:
        got = actual[want.message_key]
        assert (got.count, got.missing, got.invalid) == (want.count, want.missing, want.invalid)
        if want.kl_bits is None:
            assert got.kl_bits is None
        else:
            assert got.kl_bits == pytest.approx(want.kl_bits, abs=1e-12, rel=0)
        assert got.drift == want.drift

    # Nothing was dead-lettered.
    dead = KafkaConsumer(
        kafka["dead_letter_topic"],
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    assert list(dead) == []
    dead.close()
    print(f"kldrift run on Flink: last window reported and job stopped in {elapsed:.0f} s")


def test_checkpointing_on_flink_finishes_bundles_before_each_checkpoint() -> None:
    """Without it Beam's Flink operators hold a bundle's output at a checkpoint until their next
    bundle: reports of the steps fed once per window came 10-25 s late."""
    flink_args = ["--runner=FlinkRunner", "--flink_job_server_jar=/x.jar"]
    checkpointed = pipeline_options([*flink_args, "--checkpointing_interval=5000"], streaming=True)
    assert "--finish_bundle_before_checkpointing" in _flags(checkpointed)
    plain = pipeline_options(flink_args, streaming=True)
    assert "--finish_bundle_before_checkpointing" not in _flags(plain)
    prism = pipeline_options(
        ["--runner=PrismRunner", "--prism_location=/p", "--checkpointing_interval=5000"],
        streaming=True,
    )
    assert "--finish_bundle_before_checkpointing" not in _flags(prism)


def _flags(options: object) -> list[str]:
    return list(options._flags)  # type: ignore[attr-defined]


def test_a_restore_on_the_embedded_cluster_goes_through_flink_conf_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beam's job server applies --savepoint_path only for a remote cluster: for [local]/[auto],
    kldrift run writes execution.savepoint.path into a FLINK_CONF_DIR of its own, keeping the
    user's other Flink settings; for a remote master it leaves Beam to do it."""
    from kldrift.local.runners import restore_embedded_flink
    from kldrift.pipeline.streaming import savepoint_of

    user_conf = tmp_path / "user-conf"
    user_conf.mkdir()
    (user_conf / "flink-conf.yaml").write_text(
        "taskmanager.numberOfTaskSlots: 4\nexecution.savepoint.path: file:///old\n"
    )
    monkeypatch.setenv("FLINK_CONF_DIR", str(user_conf))
    args = ["--runner", "FlinkRunner", "--savepoint_path", "file:///ck/job/chk-7"]
    assert savepoint_of(args) == "file:///ck/job/chk-7"
    restore_embedded_flink("file:///ck/job/chk-7", args)
    conf = Path(os.environ["FLINK_CONF_DIR"])
    assert conf != user_conf
    assert (conf / "flink-conf.yaml").read_text().splitlines() == [
        "taskmanager.numberOfTaskSlots: 4",
        "execution.savepoint.path: file:///ck/job/chk-7",
    ]
    monkeypatch.setenv("FLINK_CONF_DIR", str(user_conf))
    restore_embedded_flink("file:///s", ["--runner=FlinkRunner", "--flink_master=host:8081"])
    assert os.environ["FLINK_CONF_DIR"] == str(user_conf)


def test_a_restore_refuses_a_config_yaml_it_would_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flink 1.19 reads config.yaml before flink-conf.yaml: a restore through a flink-conf.yaml of
    kldrift's own would run without the user's settings, so it stops naming the file instead."""
    user_conf = tmp_path / "user-conf"
    user_conf.mkdir()
    (user_conf / "config.yaml").write_text("taskmanager:\n  numberOfTaskSlots: 4\n")
    monkeypatch.setenv("FLINK_CONF_DIR", str(user_conf))
    with pytest.raises(flink.FlinkSetupError, match=r"config\.yaml"):
        flink.restore_conf_dir("file:///ck/chk-1", tmp_path / "ours")


def test_a_remote_flink_master_runs_without_operator_chaining() -> None:
    """Flink derives operator ids from the chained graph: with chaining, a savepoint of a p=1 job
    did not restore at p=2 (tests/e2e/test_flink_cluster.py restores one with it off). The bare
    flag is Beam's way to turn this default-true option off; the embedded cluster keeps chaining."""
    remote = ["--runner=FlinkRunner", "--flink_job_server_jar=/x.jar", "--flink_master=h:8081"]
    assert "--operator_chaining" in _flags(pipeline_options(remote, streaming=True))
    for master in ("[local]", "[auto]"):
        embedded = [*remote[:2], f"--flink_master={master}"]
        assert "--operator_chaining" not in _flags(pipeline_options(embedded, streaming=True))
    assert "--operator_chaining" not in _flags(pipeline_options(remote[:2], streaming=True))


def test_the_flink_job_to_cancel_is_named_after_the_beam_job() -> None:
    """Beam's job service id is NAME_UUID; the Flink job is called NAME (seen on the cluster)."""
    from kldrift.pipeline.flink_rest import flink_job_name, remote_master

    beam_id = "BeamApp-root-1206115347-29f9c48_cb49711c-874a-427e-909f-ec96a40497a8"
    assert flink_job_name(beam_id) == "BeamApp-root-1206115347-29f9c48"
    assert flink_job_name("my_job_" + beam_id.split("_")[1]) == "my_job"
    assert remote_master("127.0.0.1:8081") == "http://127.0.0.1:8081"
    assert remote_master("http://flink:8081") == "http://flink:8081"
    assert remote_master("[local]") is None and remote_master(None) is None
