"""Beam's Flink job server for `kldrift run -- --runner FlinkRunner` on this machine, from Maven Central.

Beam's FlinkRunner (Python) starts a Java "job server" with ``java -jar JAR``; with
``--flink_master=[local]`` that JVM also runs an embedded Flink cluster, and the Python SDK harness
runs inside the submitting process (``--environment_type=LOOPBACK``): no Docker, no Flink install.
Without ``--flink_job_server_jar`` Beam would download the shaded job server jar at run time;
`kldrift.pipeline.options.pipeline_options` passes the jar installed here instead.

* `ensure_installed()` fetches, once, the jars of the packaged ``flink-pom.xml`` (Beam's
  FlinkJobServerDriver for Flink `FLINK_VERSION`, Beam Java `BEAM_JAVA_VERSION`, and its
  dependencies; ~150 MB) with `mvn` into ``cache_dir()/flink-<FLINK_VERSION>-beam-<version>/lib``
  and writes a launcher jar beside it: a manifest (Main-Class, a Class-Path of ``lib/*.jar``,
  the Add-Opens/Add-Exports Flink needs on Java 17), an slf4j-simple config, and the class that
  lets a job for a cluster on this machine stage this jar only (`kldrift.local.flink_staging`).
  Later calls are offline. `KLDRIFT_FLINK_JOB_SERVER_JAR` overrides the jar (e.g. a shaded job server jar).

Why not the shaded ``beam-runners-flink-<flink>-job-server`` jar of the installed Beam (2.77)?
The Maven Central that kldrift's machines reach serves no version of it and no Beam Java artifact
at 2.77.0. It serves the unshaded Flink runner at 2.70.0 but not 2.70.0's job-service module, so
``flink-pom.xml`` pairs the 2.70.0 runner with job-service 2.65.0 (see there). The Python SDK
(2.77) talks to it through Beam's portable job API.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from kldrift.exceptions import FlinkSetupError as FlinkSetupError
from kldrift.local.flink_staging import DETECTOR_ENTRY, detector_class
from kldrift.local.maven import fetch_jars, file_lock, require_mvn
from kldrift.local.paths import cache_dir

FLINK_VERSION = "1.19"
"""The Flink minor version of the embedded cluster (Flink 1.19.0; must match ``flink-pom.xml``)."""
BEAM_JAVA_VERSION = "2.70.0"
"""The version of Beam's Java Flink runner / job server (must match ``flink-pom.xml``)."""
BEAM_JOB_SERVICE_VERSION = "2.65.0"
"""The job-service module's version (2.70.0's is not served; must match ``flink-pom.xml``)."""
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
JAR_NAME = "kldrift-flink-job-server.jar"
"""The launcher jar's file name; also how to recognise a running job server (`ps`)."""

_POM_RESOURCE = "flink-pom.xml"
_MARKER = ".installed"
_OVERRIDE_ENV = "KLDRIFT_FLINK_JOB_SERVER_JAR"

# What Flink's own launch scripts pass on Java 17 (env.java.opts.all in Flink 1.19's config),
# given as launcher jar manifest attributes: they apply to `java -jar` without any flags.
_ADD_OPENS = (
    "java.base/java.lang",
    "java.base/java.net",
    "java.base/java.io",
    "java.base/java.nio",
    "java.base/sun.nio.ch",
    "java.base/java.lang.reflect",
    "java.base/java.text",
    "java.base/java.time",
    "java.base/java.util",
    "java.base/java.util.concurrent",
    "java.base/java.util.concurrent.atomic",
    "java.base/java.util.concurrent.locks",
)
_ADD_EXPORTS = (
    "java.base/sun.net.util",
    "java.rmi/sun.rmi.registry",
    "java.security.jgss/sun.security.krb5",
)
# slf4j-simple (stderr, which Beam logs at INFO under the `FlinkJarJobServer` logger).
_SIMPLE_LOGGER = """\
org.slf4j.simpleLogger.defaultLogLevel=warn
org.slf4j.simpleLogger.showDateTime=true
org.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS
org.slf4j.simpleLogger.log.org.apache.beam=info
org.slf4j.simpleLogger.log.org.apache.flink.runtime.checkpoint=warn
"""


def install_dir() -> Path:
    """``cache_dir()/flink-<FLINK_VERSION>-beam-<BEAM_JAVA_VERSION>`` (may not exist yet)."""
    return cache_dir() / f"flink-{FLINK_VERSION}-beam-{BEAM_JAVA_VERSION}"


def job_server_jar_path() -> Path:
    """Where the launcher jar lives once installed."""
    return install_dir() / JAR_NAME


def is_installed() -> bool:
    target = install_dir()
    return (target / _MARKER).is_file() and (target / JAR_NAME).is_file()


def _manifest_lines(attributes: Sequence[tuple[str, str]]) -> bytes:
    """A JAR manifest: CRLF lines of at most 72 bytes, continuations starting with a space."""
    out = []
    for name, value in attributes:
        data = f"{name}: {value}".encode()
        chunks = [data[:72]]
        data = data[72:]
        while data:
            chunks.append(b" " + data[:71])
            data = data[71:]
        out.append(b"\r\n".join(chunks) + b"\r\n")
    return b"".join(out) + b"\r\n"


def write_launcher_jar(jar: Path, lib: Path, jar_names: Sequence[str]) -> Path:
    """A jar that runs `JOB_SERVER_MAIN` on ``lib/*.jar``: a manifest, a logging config and
    `flink_staging.DETECTOR_CLASS`, which makes a job stage this jar only.

    Class-Path entries are absolute ``file:`` URLs: the cluster's class loader reads them from the
    one staged copy of this jar (`kldrift.local.flink_staging`); `ensure_installed` rewrites the
    jar if the install has moved.
    """
    manifest = _manifest_lines(
        [
            ("Manifest-Version", "1.0"),
            ("Created-By", "kldrift.local.flink"),
            ("Main-Class", JOB_SERVER_MAIN),
            ("Class-Path", " ".join((lib / name).resolve().as_uri() for name in jar_names)),
            ("Add-Opens", " ".join(_ADD_OPENS)),
            ("Add-Exports", " ".join(_ADD_EXPORTS)),
        ]
    )
    tmp = jar.with_name(jar.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("META-INF/MANIFEST.MF", manifest)
        archive.writestr("simplelogger.properties", _SIMPLE_LOGGER)
        archive.writestr(DETECTOR_ENTRY, detector_class(jar.resolve()))
    os.replace(tmp, jar)
    return jar


def _launcher_current(jar: Path, lib: Path) -> bool:
    """Whether `jar` is this version's launcher for `lib` (absolute Class-Path, detector class)."""
    try:
        with zipfile.ZipFile(jar) as archive:
            names = archive.namelist()
            manifest = archive.read("META-INF/MANIFEST.MF").replace(b"\r\n ", b"")
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    return DETECTOR_ENTRY in names and f"Class-Path: {lib.resolve().as_uri()}/".encode() in manifest


def _required_jars_present(lib: Path) -> bool:
    names = {p.name for p in lib.glob("*.jar")}
    return (
        f"beam-runners-flink-{FLINK_VERSION}-{BEAM_JAVA_VERSION}.jar" in names
        and f"beam-runners-java-job-service-{BEAM_JOB_SERVICE_VERSION}.jar" in names
        and f"beam-sdks-java-expansion-service-{BEAM_JAVA_VERSION}.jar" in names
        and any(n.startswith(f"flink-runtime-{FLINK_VERSION}.") for n in names)
        and any(n.startswith("slf4j-simple-") for n in names)
    )


def _check_java() -> None:
    # Beam starts the job server with `java` from PATH (`--job_server_java_launcher`).
    if shutil.which("java") is None:
        raise FlinkSetupError(
            "`java` is not on PATH: Beam's Flink job server needs Java 11 or 17 "
            "(e.g. `apt-get install openjdk-17-jre-headless`)"
        )


def ensure_installed() -> Path:
    """Return the job server jar to pass as ``--flink_job_server_jar``, installing it once.

    A complete install (marker file present) is returned without touching the network. Otherwise
    Maven copies the runtime dependencies of the packaged ``flink-pom.xml`` into a temporary
    directory inside the install dir, which is renamed into place once the launcher jar is written,
    so an interrupted install never looks complete.
    """
    override = os.environ.get(_OVERRIDE_ENV)
    if override:
        return Path(override)
    target = install_dir()
    if is_installed() and _launcher_current(target / JAR_NAME, target / "lib"):
        return target / JAR_NAME
    with file_lock(cache_dir() / f".flink-{FLINK_VERSION}-beam-{BEAM_JAVA_VERSION}.lock"):
        if is_installed():  # another process finished while we waited, or an older launcher
            if not _launcher_current(target / JAR_NAME, target / "lib"):
                jars = json.loads((target / _MARKER).read_text())["jars"]
                write_launcher_jar(target / JAR_NAME, target / "lib", jars)
            return target / JAR_NAME
        require_mvn(f"Beam's Flink {FLINK_VERSION} job server", FlinkSetupError)
        _check_java()
        print(
            f"setup: fetching Beam {BEAM_JAVA_VERSION} Flink {FLINK_VERSION} job server jars "
            "(~150 MB) from Maven Central"
        )
        sys.stdout.flush()
        (target / JAR_NAME).unlink(missing_ok=True)  # an older, unmarked copy
        lib = fetch_jars(
            _POM_RESOURCE,
            target,
            what=f"Beam's Flink {FLINK_VERSION} job server",
            complete=_required_jars_present,
            error=FlinkSetupError,
        )
        jars = sorted(p.name for p in lib.glob("*.jar"))
        write_launcher_jar(target / JAR_NAME, lib, jars)
        marker_tmp = target / f"{_MARKER}.tmp"
        marker_tmp.write_text(
            json.dumps(
                {
                    "flink_version": FLINK_VERSION,
                    "beam_java_version": BEAM_JAVA_VERSION,
                    "main": JOB_SERVER_MAIN,
                    "jars": jars,
                },
                indent=1,
            )
        )
        os.replace(marker_tmp, target / _MARKER)
    return target / JAR_NAME


EMBEDDED_MASTERS = ("[local]", "[auto]")  # kldrift.pipeline.flink_rest has the same
_SAVEPOINT_KEY = "execution.savepoint.path"


def restore_conf_dir(savepoint: str, into: Path) -> Path:
    """A Flink configuration directory that makes the embedded cluster restore `savepoint`.

    Beam's job server applies `--savepoint_path` only when it submits to a remote cluster
    (a RemoteStreamEnvironment); the embedded one (`--flink_master=[local]` or `[auto]`) ignores
    it. Both read the Flink configuration of FLINK_CONF_DIR, whose `execution.savepoint.path`
    the embedded cluster does apply: this writes such a directory (a copy of the current
    FLINK_CONF_DIR's flink-conf.yaml, if any, with the key set) for the job server to inherit.
    A user's config.yaml (Flink 1.19's new format) is not carried over: its settings would be lost
    for the restored run, so that case fails here rather than silently.
    """
    into.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    current = os.environ.get("FLINK_CONF_DIR")
    if current and (Path(current) / "config.yaml").is_file():
        raise FlinkSetupError(
            f"FLINK_CONF_DIR {current} holds a config.yaml: kldrift run restores the embedded "
            "cluster through a flink-conf.yaml of its own; put your settings in flink-conf.yaml, "
            "or restore on a remote cluster (--flink_master=HOST:PORT)"
        )
    if current and (Path(current) / "flink-conf.yaml").is_file():
        lines = [
            line
            for line in (Path(current) / "flink-conf.yaml").read_text().splitlines()
            if not line.strip().startswith(_SAVEPOINT_KEY)
        ]
    lines.append(f"{_SAVEPOINT_KEY}: {savepoint}")
    (into / "flink-conf.yaml").write_text("\n".join(lines) + "\n")
    return into
