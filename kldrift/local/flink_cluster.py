"""A standalone Flink session cluster on this machine: a JobManager, N TaskManagers and a Beam Python
worker pool, as separate processes (``kldrift local flink start|stop|status``).

The Flink distribution's ``lib/`` comes from PyPI's ``apache-flink-libraries`` (`DIST_VERSION`;
it holds ``flink-dist``, with the RocksDB state backend, and log4j), fetched once with
``pip download`` into ``cache_dir()/flink-dist-<DIST_VERSION>`` by `ensure_dist_installed`.
Each cluster has a directory of its own: ``conf/config.yaml`` (RocksDB, checkpoints and
savepoints under the directory, REST and RPC on 127.0.0.1, a fixed-delay restart strategy, short
heartbeats so a lost TaskManager is noticed in seconds), ``log/`` and ``state.json``.

Python workers: Beam's EXTERNAL environment names one address per pipeline
(``--environment_config=HOST:PORT``), so TaskManagers on one host cannot each have a pool at
``localhost:50000`` as the Kubernetes pods do: the cluster runs one worker pool that every
TaskManager asks for its SDK workers (`FlinkCluster.environment_args`). A worker lives as long as
the TaskManager task that asked for it: when a TaskManager dies, its workers lose their control
connection and exit; the pool stays.

Beam's runner classes reach the cluster with each job: with `STAGING_ARGS` (what `run_args` prints
and `kldrift run` adds for this cluster) the job server stages its launcher jar only (~20 KB,
`kldrift.local.flink_staging`), whose ``Class-Path`` of absolute ``file:`` URLs gives the
TaskManagers' user-code class loader (child-first) the job server's jars from this machine's disk;
without it Beam stages all of them (~157 MB) to the JobManager's blob server with each job.
Flink's own classes (``org.apache.flink.``) come from the cluster's ``lib/`` (1.19.3), the job
server's Flink 1.19.0 jars are ignored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kldrift.exceptions import FlinkSetupError
from kldrift.local import flink
from kldrift.local.flink import _ADD_EXPORTS, _ADD_OPENS
from kldrift.local.flink_staging import DETECTOR_CLASS
from kldrift.local.maven import file_lock
from kldrift.local.paths import cache_dir
from kldrift.pipeline.options import flag_value, has_flag

DIST_VERSION = "1.19.3"
"""The Flink release of the session cluster (PyPI's apache-flink-libraries of that version)."""
_DIST_PACKAGE = f"apache-flink-libraries=={DIST_VERSION}"
_MARKER = ".installed"

JOBMANAGER_MAIN = "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"
TASKMANAGER_MAIN = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
WORKER_POOL_MODULE = "kldrift.local.flink_worker_pool"
PROCESS_MARKERS = (JOBMANAGER_MAIN, TASKMANAGER_MAIN, WORKER_POOL_MODULE)
"""What the command line of each of the cluster's processes contains (scripts/leftovers.py)."""

CHECKPOINT_INTERVAL_MS = 5000
"""The checkpoint interval the local cluster is tested with (`kldrift run` passes it)."""
_RESTART_DELAY = "2 s"
STAGING_FLAG = "--pipeline_resources_detector_factory_class"
STAGING_ARGS = (f"{STAGING_FLAG}={DETECTOR_CLASS}",)
"""Stage only the launcher jar with a job (the cluster reads the rest from this machine's disk)."""

_LOG4J = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = MainAppender
appender.main.name = MainAppender
appender.main.type = File
appender.main.append = true
appender.main.fileName = ${sys:log.file}
appender.main.layout.type = PatternLayout
appender.main.layout.pattern = %d{yyyy-MM-dd HH:mm:ss,SSS} %-5p %-60c %x - %m%n
logger.pekko.name = org.apache.pekko
logger.pekko.level = WARN
"""


# --- install ----------------------------------------------------------------------------------


def dist_dir() -> Path:
    return cache_dir() / f"flink-dist-{DIST_VERSION}"


def dist_installed() -> bool:
    d = dist_dir()
    return (d / _MARKER).is_file() and any((d / "lib").glob("flink-dist-*.jar"))


def ensure_dist_installed() -> Path:
    """The Flink distribution's directory (``lib/``, ``bin/bash-java-utils.jar``), fetched once
    from PyPI (`pip download apache-flink-libraries==DIST_VERSION --no-deps`, ~230 MB, of which
    the lib/ and bin/ jars are kept); offline once installed."""
    target = dist_dir()
    if dist_installed():
        return target
    with file_lock(cache_dir() / f".flink-dist-{DIST_VERSION}.lock"):
        if dist_installed():
            return target
        print(f"setup: fetching Flink {DIST_VERSION} ({_DIST_PACKAGE}, ~230 MB) from PyPI")
        sys.stdout.flush()
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "download", _DIST_PACKAGE, "--no-deps", "-d", tmp],
                capture_output=True, text=True,
            )  # fmt: skip
            archives = list(Path(tmp).glob("apache-flink-libraries-*.tar.gz"))
            if done.returncode != 0 or not archives:
                raise FlinkSetupError(
                    f"could not download {_DIST_PACKAGE} from PyPI: {done.stderr[-2000:]}"
                )
            staging = Path(tmp) / "dist"
            _extract_dist(archives[0], staging)
            (staging / _MARKER).write_text(json.dumps({"flink_version": DIST_VERSION}) + "\n")
            os.replace(staging, target)
    return target


def _extract_dist(archive: Path, into: Path) -> None:
    """``deps/lib/*.jar`` and ``deps/bin/bash-java-utils.jar`` of the sdist into `into`."""
    (into / "lib").mkdir(parents=True)
    (into / "bin").mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4 or parts[1] != "deps":
                continue
            if (parts[2] == "lib" and parts[3].endswith(".jar")) or parts[2:] == (
                "bin",
                "bash-java-utils.jar",
            ):
                source = tar.extractfile(member)
                assert source is not None
                (into / parts[2] / parts[3]).write_bytes(source.read())
    if not any((into / "lib").glob("flink-dist-*.jar")):
        raise FlinkSetupError(f"{archive.name} holds no deps/lib/flink-dist jar")


# --- the cluster -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _java_module_flags() -> list[str]:
    return [f"--add-opens={p}=ALL-UNNAMED" for p in _ADD_OPENS] + [
        f"--add-exports={p}=ALL-UNNAMED" for p in _ADD_EXPORTS
    ]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@dataclasses.dataclass
class ClusterState:
    """What `FlinkCluster.start` records in ``state.json``: the ports and each process's pid."""

    rest_port: int
    rpc_port: int
    pool_port: int
    slots: int
    jobmanager: int = 0
    pool: int = 0
    taskmanagers: dict[str, int] = dataclasses.field(default_factory=dict)


class FlinkCluster:
    """One session cluster living in `directory` (conf, logs, checkpoints, savepoints, state)."""

    def __init__(self, directory: Path, taskmanagers: int = 1, slots: int = 2) -> None:
        if taskmanagers < 1:
            raise FlinkSetupError(f"--taskmanagers must be at least 1, not {taskmanagers}")
        self.dir = Path(directory).resolve()
        self.taskmanagers = taskmanagers
        self.slots = slots
        self.state: ClusterState | None = self._read_state()

    # paths and addresses
    @property
    def conf_dir(self) -> Path:
        return self.dir / "conf"

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def savepoints(self) -> Path:
        return self.dir / "savepoints"

    @property
    def rest(self) -> str:
        """``127.0.0.1:PORT``: the REST endpoint and web UI, and what `--flink_master` takes."""
        return f"127.0.0.1:{self._state().rest_port}"

    def environment_args(self) -> list[str]:
        """The Beam flags that make a job's Python steps run in this cluster's worker pool."""
        return [
            "--environment_type=EXTERNAL",
            f"--environment_config=127.0.0.1:{self._state().pool_port}",
        ]

    def _state(self) -> ClusterState:
        if self.state is None:
            raise FlinkSetupError(f"no Flink cluster was started in {self.dir}")
        return self.state

    def _read_state(self) -> ClusterState | None:
        try:
            raw = json.loads((self.dir / "state.json").read_text())
            return ClusterState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _write_state(self) -> None:
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(self._state()), indent=1) + "\n")
        os.replace(tmp, self.dir / "state.json")

    # start
    def start(self, timeout_s: float = 120) -> FlinkCluster:
        """Write the configuration, start the JobManager, the worker pool and the TaskManagers,
        and wait until the REST endpoint counts every TaskManager."""
        dist = ensure_dist_installed()
        if shutil.which("java") is None:
            raise FlinkSetupError("`java` (11 or 17) is not on PATH: Flink needs it")
        if self.running():
            raise FlinkSetupError(f"a Flink cluster already runs in {self.dir} ({self.rest})")
        for d in (self.conf_dir, self.log_dir, self.checkpoints, self.savepoints, self.dir / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        self.state = ClusterState(
            rest_port=_free_port(), rpc_port=_free_port(), pool_port=_free_port(), slots=self.slots
        )
        self._write_conf()
        self.start_jobmanager()
        self.state.pool = self._spawn("worker-pool", self._pool_command(), env=self._pool_env())
        self._write_state()
        tm_jvm, tm_dynamic = self._taskmanager_params(dist)
        for i in range(self.taskmanagers):
            self.start_taskmanager(i, (tm_jvm, tm_dynamic))
        self.wait_for_taskmanagers(self.taskmanagers, timeout_s)
        return self

    def _write_conf(self) -> None:
        state = self._state()
        conf = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": state.rpc_port,
            "jobmanager.bind-host": "127.0.0.1",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": state.rest_port,
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.memory.process.size": "1600m",
            "taskmanager.memory.managed.fraction": 0.25,
            "taskmanager.numberOfTaskSlots": state.slots,
            # The settings deploy/flink/k8s/flinkdeployment.yaml uses (with object storage there).
            "state.backend.type": "rocksdb",
            "state.backend.incremental": True,
            "state.checkpoints.dir": f"file://{self.checkpoints}",
            "state.savepoints.dir": f"file://{self.savepoints}",
            "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": 2147483647,
            "restart-strategy.fixed-delay.delay": _RESTART_DELAY,
            # A TaskManager killed is noticed within seconds (defaults: 10 s / 50 s).
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 5000,
            "io.tmp.dirs": str(self.dir / "tmp"),
            "web.tmpdir": str(self.dir / "tmp"),
            "blob.storage.directory": str(self.dir / "tmp"),
        }
        (self.conf_dir / "config.yaml").write_text(
            "".join(f"{key}: {json.dumps(value)}\n" for key, value in conf.items())
        )
        (self.conf_dir / "log4j.properties").write_text(_LOG4J)

    def _java(self, name: str, dist: Path, jvm: list[str], main: str, args: list[str]) -> list[str]:
        return [
            "java",
            *jvm,
            *_java_module_flags(),
            f"-Dlog.file={self.log_dir / (name + '.log')}",
            f"-Dlog4j.configurationFile=file:{self.conf_dir / 'log4j.properties'}",
            "-cp",
            str(dist / "lib" / "*"),
            main,
            "--configDir",
            str(self.conf_dir),
            *args,
        ]

    def _jobmanager_command(self, dist: Path) -> list[str]:
        jvm, _ = self._bash_java_utils(dist, "GET_JM_RESOURCE_PARAMS")
        return self._java("jobmanager", dist, jvm, JOBMANAGER_MAIN, [])

    def _taskmanager_params(self, dist: Path) -> tuple[list[str], list[str]]:
        return self._bash_java_utils(dist, "GET_TM_RESOURCE_PARAMS")

    def _bash_java_utils(self, dist: Path, command: str) -> tuple[list[str], list[str]]:
        """Flink's own memory calculation (what bin/taskmanager.sh runs): JVM flags, -D options."""
        done = subprocess.run(
            ["java", "-cp", f"{dist / 'bin' / 'bash-java-utils.jar'}:{dist / 'lib' / '*'}",
             "org.apache.flink.runtime.util.bash.BashJavaUtils", command,
             "--configDir", str(self.conf_dir)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        results = [
            line.split(":", 1)[1]
            for line in done.stdout.splitlines()
            if line.startswith("BASH_JAVA_UTILS_EXEC_RESULT:")
        ]
        if done.returncode != 0 or len(results) < 2:
            raise FlinkSetupError(f"Flink's BashJavaUtils {command} failed: {done.stdout[-2000:]}")
        return results[0].split(), results[1].split()

    def _pool_command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            WORKER_POOL_MODULE,
            f"--service_port={self._state().pool_port}",
        ]

    def _pool_env(self) -> dict[str, str]:
        # The pool starts each SDK worker as `python ...`: this interpreter's, so kldrift and
        # Beam import in the workers as they do here.
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> int:
        """Start `command` detached (own session, so a stop signals its children too)."""
        out = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115 (kept by the child)
        with out:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=env,
                start_new_session=True,
            )
        return process.pid

    def start_taskmanager(
        self, index: int, params: tuple[list[str], list[str]] | None = None
    ) -> int:
        """Start TaskManager `index` (``tm-INDEX``, log ``log/tm-INDEX.log``); its pid."""
        dist = ensure_dist_installed()
        jvm, dynamic = params or self._taskmanager_params(dist)
        name = f"tm-{index}"
        command = self._java(
            name, dist, jvm, TASKMANAGER_MAIN, [*dynamic, "-D", f"taskmanager.resource-id={name}"]
        )
        pid = self._spawn(name, command)
        self._state().taskmanagers[name] = pid
        self._write_state()
        return pid

    def kill_taskmanager(self, name: str) -> None:
        """SIGKILL TaskManager `name` (``tm-N``), as a machine loss would."""
        pid = self._state().taskmanagers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        self._write_state()

    def start_jobmanager(self) -> int:
        """Start the JobManager (log ``log/jobmanager.log``); again after `kill_jobmanager`, on the
        same ports, where the TaskManagers register again (without HA it knows no job); its pid."""
        pid = self._spawn("jobmanager", self._jobmanager_command(ensure_dist_installed()))
        self._state().jobmanager = pid
        self._write_state()
        return pid

    def kill_jobmanager(self) -> None:
        """SIGKILL the JobManager."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._state().jobmanager, signal.SIGKILL)

    # REST
    def get(self, path: str, timeout_s: float = 10) -> Any:
        with urllib.request.urlopen(f"http://{self.rest}{path}", timeout=timeout_s) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://{self.rest}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def wait_for_taskmanagers(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen = -1
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError, ValueError):
                seen = int(self.get("/overview", 2)["taskmanagers"])
                if seen >= count:
                    return
            time.sleep(0.5)
        raise FlinkSetupError(
            f"the Flink cluster in {self.dir} has {seen} of {count} TaskManagers after "
            f"{timeout_s:.0f} s; logs in {self.log_dir}"
        )

    def _check_alive(self) -> None:
        state = self._state()
        for name, pid in [("jobmanager", state.jobmanager), *state.taskmanagers.items()]:
            if not _alive(pid):
                tail = (self.log_dir / f"{name}.out").read_text(errors="replace")[-2000:]
                raise FlinkSetupError(f"Flink's {name} exited at start; {self.log_dir}:\n{tail}")

    def running_jobs(self) -> list[str]:
        return [j["id"] for j in self.get("/jobs")["jobs"] if j["status"] == "RUNNING"]

    def stop_with_savepoint(self, job_id: str, timeout_s: float = 120) -> str:
        """Flink's stop with a savepoint (REST ``POST /jobs/:id/stop``): the savepoint's path."""
        trigger = self.post(
            f"/jobs/{job_id}/stop", {"targetDirectory": str(self.savepoints), "drain": False}
        )["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.get(f"/jobs/{job_id}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status["operation"]
                if "location" not in operation:
                    raise FlinkSetupError(f"stop with savepoint failed: {operation}")
                return str(operation["location"])
            time.sleep(0.5)
        raise FlinkSetupError(f"no savepoint for job {job_id} after {timeout_s:.0f} s")

    # stop
    def pids(self) -> list[int]:
        if self.state is None:
            return []
        state = self.state
        return [p for p in (state.pool, *state.taskmanagers.values(), state.jobmanager) if p]

    def running(self) -> bool:
        return any(_alive(pid) for pid in self.pids())

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM every process group (pool and its workers, TaskManagers, JobManager), SIGKILL
        what is left after `timeout_s`; nothing of the cluster runs afterwards."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        while any(_alive(p) for p in pids) and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        (self.dir / "state.json").unlink(missing_ok=True)


# --- `kldrift local flink` ---------------------------------------------------------------------


def run_dir() -> Path:
    """The CLI cluster's directory: ``cache_dir()/run/flink``."""
    return cache_dir() / "run" / "flink"


def cli(action: str, taskmanagers: int = 1, data_dir: Path | None = None) -> int:
    """`kldrift local flink start|stop|status [--data-dir D]` (default D: `run_dir()`)."""
    directory = Path(data_dir).resolve() if data_dir else run_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(directory.with_name(directory.name + ".lock")):
        cluster = FlinkCluster(directory, taskmanagers)
        if action == "status":
            return _status(cluster)
        if action == "stop":
            if not cluster.running():
                print("flink: not running")
                return 0
            cluster.stop()
            print(f"flink: stopped; checkpoints and logs kept in {cluster.dir}")
            return 0
        if cluster.running():
            print(f"flink: already running in {cluster.dir}")
            return _status(cluster)
        began = time.monotonic()
        try:
            cluster.start()
        except BaseException:
            cluster.stop(5)
            raise
        print(
            f"flink: started Flink {DIST_VERSION} with {taskmanagers} TaskManager(s) in "
            f"{time.monotonic() - began:.1f} s; web UI http://{cluster.rest}, logs {cluster.log_dir}"
        )
        print(f"flink: kldrift run --config C -- {' '.join(run_args(cluster))}")
        return 0


def run_args(cluster: FlinkCluster) -> list[str]:
    """The Beam flags that run a kldrift job on `cluster`, checkpointed, staging only the launcher
    jar (`kldrift.local.flink_staging`)."""
    return [
        "--runner=FlinkRunner",
        f"--flink_master={cluster.rest}",
        *cluster.environment_args(),
        *STAGING_ARGS,
        f"--checkpointing_interval={CHECKPOINT_INTERVAL_MS}",
    ]


def local_cluster_args(master: str, given: Sequence[str]) -> list[str]:
    """For a `--flink_master` that is `kldrift local flink`'s running cluster (in `run_dir()`):
    the flags of `run_args` that `given` lacks: its worker pool (EXTERNAL) and, when the job server
    is kldrift's own launcher jar, staging that jar only. Else none (Beam's defaults apply)."""
    cluster = FlinkCluster(run_dir())
    address = master.removeprefix("http://").rstrip("/")
    if cluster.state is None or address != cluster.rest or not cluster.running():
        return []
    added = [] if has_flag(given, "--environment_type") else cluster.environment_args()
    own_jar = flag_value(given, "--flink_job_server_jar") == str(flink.job_server_jar_path())
    if own_jar and not has_flag(given, STAGING_FLAG):
        added += STAGING_ARGS
    return added


def _status(cluster: FlinkCluster) -> int:
    if not cluster.running():
        print("flink: not running")
        return 3
    try:
        overview = cluster.get("/overview")
    except (OSError, urllib.error.URLError) as err:
        print(f"flink: processes alive but REST {cluster.rest} does not answer: {err}")
        return 1
    print(
        f"flink: running at http://{cluster.rest}: {overview['taskmanagers']} TaskManager(s), "
        f"{overview['slots-available']}/{overview['slots-total']} slots free, "
        f"{overview['jobs-running']} job(s) running; worker pool "
        f"{cluster.environment_args()[1].split('=', 1)[1]}"
    )
    return 0
