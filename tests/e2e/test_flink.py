"""`kldrift run` on Beam's FlinkRunner, the options and launcher it is given: the installed job server
jar, LOOPBACK, the embedded cluster's restore path, a remote master's flags. The jobs themselves
run in test_flink_checkpoints.py (embedded cluster: reports equal `kldrift replay`'s, no job server
JVM left running), test_restart.py and test_flink_cluster.py (a session cluster)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from kldrift.local import flink
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options

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

    from kldrift.local.flink_staging import DETECTOR_ENTRY

    names = [f"dependency-number-{i}-with-a-long-name-1.0.jar" for i in range(40)]
    jar = flink.write_launcher_jar(tmp_path / flink.JAR_NAME, tmp_path / "lib", names)
    with zipfile.ZipFile(jar) as archive:
        raw = archive.read("META-INF/MANIFEST.MF")
        assert archive.read("simplelogger.properties")
        detector = archive.read(DETECTOR_ENTRY)
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
    assert attrs["Class-Path"].split() == [f"file://{tmp_path}/lib/{n}" for n in names]
    assert "java.base/java.util" in attrs["Add-Opens"].split()
    # The staging class names the launcher jar itself (a string constant of its class file).
    assert detector.startswith(b"\xca\xfe\xba\xbe") and str(jar).encode() in detector


def test_the_staging_option_is_among_the_options_beam_sends() -> None:
    """The job server does not describe `pipelineResourcesDetectorFactoryClass` to Python: without
    kldrift's declaration Beam would drop the flag, and a job would stage the whole class path."""
    from kldrift.local.flink_cluster import STAGING_ARGS
    from kldrift.local.flink_staging import DETECTOR_CLASS

    options = pipeline_options(["--runner=FlinkRunner", *STAGING_ARGS], streaming=True)
    sent = options.get_all_options(retain_unknown_options=False)
    assert sent["pipeline_resources_detector_factory_class"] == DETECTOR_CLASS


def _windows_of(t: float) -> list[int]:
    last = math.floor(t / PERIOD_S) * PERIOD_S
    return [last - i * PERIOD_S for i in range(SIZE_S // PERIOD_S)]


@pytest.fixture(scope="module")
def job_server_jar() -> Path:
    # The set-up installs it; a failure to install is a failure (FlinkSetupError says why).
    return flink.ensure_installed()


@pytest.mark.services
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
