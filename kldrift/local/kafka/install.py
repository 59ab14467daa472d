"""Installing the broker: its jars from Maven Central (once, with `mvn`), and a Java 17+ to run them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from kldrift.local.maven import fetch_jars, file_lock, require_mvn
from kldrift.local.paths import cache_dir

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka broker version `ensure_installed()` installs (must match ``kafka-pom.xml``)."""

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 20.0

_POM_RESOURCE = "kafka-pom.xml"
_LOG4J_RESOURCE = "log4j2.properties"
_MARKER = ".installed"
_HEAP_OPTS = ("-Xms256m", "-Xmx1g")
_JVM_OPTS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
# Short-lived tools (StorageTool) start faster with a small serial-GC JVM.
_TOOL_JVM_OPTS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_LOG_TAIL_LINES = 30

log = logging.getLogger(__name__)


class LocalKafkaError(RuntimeError):
    """The local broker could not be installed, started or reached."""


# --------------------------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------------------------


def install_dir() -> Path:
    """``cache_dir()/kafka-<KAFKA_VERSION>`` (may not exist yet)."""
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def _required_jars_present(lib: Path) -> bool:
    names = {p.name for p in lib.glob("*.jar")}
    return (
        f"kafka_2.13-{KAFKA_VERSION}.jar" in names
        and any(n.startswith("slf4j-api-2.") for n in names)
        and any(n.startswith("log4j-slf4j2-impl-") for n in names)
        and any(n.startswith("log4j-core-") for n in names)
    )


def _is_installed(target: Path) -> bool:
    return (target / _MARKER).is_file() and (target / "lib").is_dir()


@lru_cache(maxsize=4)
def java_executable(needed_by: str = f"Apache Kafka {KAFKA_VERSION}") -> str:
    """The `java` to run `needed_by` with ($JAVA_HOME/bin/java, else PATH); must be Java 17+."""
    java: str | None = None
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        java = os.path.join(java_home, "bin", "java")
    if java is None:
        java = shutil.which("java")
    if java is None:
        raise LocalKafkaError(
            f"`java` is not on PATH (and $JAVA_HOME is unset): {needed_by} "
            "needs Java 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    proc = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    major = _java_major(proc.stderr + proc.stdout)
    if major is not None and major < 17:
        raise LocalKafkaError(f"{java} is Java {major}; {needed_by} needs Java 17 or newer")
    return java


def _java_major(version_output: str) -> int | None:
    """Parse `java -version` output: '... version "17.0.15" ...' -> 17, '"1.8.0_392"' -> 8."""
    for line in version_output.splitlines():
        if "version" in line and '"' in line:
            text = line.split('"')[1]
            parts = text.split(".")
            try:
                first = int(parts[0].split("-")[0])
                return int(parts[1]) if first == 1 and len(parts) > 1 else first
            except ValueError:
                return None
    return None


def ensure_installed() -> Path:
    """Return the lib dir holding the Kafka broker jars, fetching them with Maven the first time.

    A complete install (marker file present) is returned without touching the network. Otherwise
    Maven copies the runtime dependencies of the packaged ``kafka-pom.xml`` into a temporary
    directory that is then renamed into place, so an interrupted install never looks complete.
    """
    target = install_dir()
    if _is_installed(target):
        return target / "lib"
    with file_lock(cache_dir() / f".kafka-{KAFKA_VERSION}.lock"):
        if _is_installed(target):  # another process finished while we waited
            return target / "lib"
        require_mvn(f"Apache Kafka {KAFKA_VERSION}", LocalKafkaError)
        java_executable()  # fail early, before a download, if there is no usable Java
        print(f"setup: fetching Apache Kafka {KAFKA_VERSION} broker jars from Maven Central")
        sys.stdout.flush()
        lib = fetch_jars(
            _POM_RESOURCE,
            target,
            what=f"Apache Kafka {KAFKA_VERSION}",
            complete=_required_jars_present,
            error=LocalKafkaError,
        )
        marker_tmp = target / f"{_MARKER}.tmp"
        jars = sorted(p.name for p in lib.glob("*.jar"))
        marker_tmp.write_text(json.dumps({"kafka_version": KAFKA_VERSION, "jars": jars}, indent=1))
        os.replace(marker_tmp, target / _MARKER)
    return lib
