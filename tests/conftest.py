"""Shared pytest fixtures, the test kinds and the guard that keeps the fast subset service-free.

Tests live in folders by what they need: tests/unit (Python and numpy only), tests/pipeline (a real
Beam runner: Prism, TestStream), tests/e2e (a Kafka broker, Flink, Prometheus, the CLI against
them) and tests/packaging (README, deploy manifests, lint-like checks). Each test gets its
folder's marker (`unit`, `pipeline`, `e2e`, `packaging`); pipeline and e2e tests are also marked
`services`; the doctests of the kldrift package are `unit` (`pipeline` for one that runs a
Beam pipeline). A test that is not marked `services`
may not start one (tests/_service_guard.py); `make test-fast` (KLDRIFT_NO_SERVICES=1,
`-m "unit or packaging"`) therefore starts no broker, Prism, Flink or Prometheus.

`kafka_bootstrap` (session scope) runs one real single-node Apache Kafka broker
(kldrift.local.kafka.LocalKafka) for the whole test run: one per pytest-xdist worker;
`schema_registry` likewise one Schema Registry (kldrift.local.registry.LocalRegistry), for the
tests that use it.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import _service_guard
import pytest

TESTS = Path(__file__).resolve().parent
KINDS = ("unit", "pipeline", "e2e", "packaging")
SERVICE_KINDS = ("pipeline", "e2e")
# Set by `make test-fast`: no test of the run may start a service.
NO_SERVICES_RUN = os.environ.get(_service_guard.ENV_FORBID) == "1"


def pytest_configure(config: pytest.Config) -> None:
    # Beam logs each cached Prism job server's start and its stop at exit ("Really destroying
    # service ..."), the latter after pytest's summary: noise at the end of every run.
    logging.getLogger("apache_beam.utils.subprocess_server").setLevel(logging.ERROR)
    guard_dir = Path(tempfile.mkdtemp(prefix="kldrift-guard-"))
    config.stash[_GUARD_LOG] = guard_dir / "violations.log"
    os.environ[_service_guard.ENV_LOG] = str(config.stash[_GUARD_LOG])
    site = _service_guard.write_sitecustomize(guard_dir / "site")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p
    )
    _service_guard.install()


_GUARD_LOG = pytest.StashKey[Path]()


def pytest_unconfigure(config: pytest.Config) -> None:
    log = config.stash.get(_GUARD_LOG, None)
    if log is not None:
        shutil.rmtree(log.parent, ignore_errors=True)


def _kind(item: pytest.Item) -> str | None:
    path = Path(str(item.path)).resolve()
    if path.is_relative_to(TESTS):
        parts = path.relative_to(TESTS).parts
        return parts[0] if len(parts) > 1 and parts[0] in KINDS else None
    # Doctests of the kldrift package: unit, but for an example that runs a pipeline (on Prism).
    return "pipeline" if _runs_a_pipeline(item) else "unit"


def _runs_a_pipeline(item: pytest.Item) -> bool:
    examples = getattr(getattr(item, "dtest", None), "examples", [])
    return any("beam.Pipeline(" in example.source for example in examples)


RUN_ORDER = {"e2e": 0, "pipeline": 1, "packaging": 2, "unit": 3}
SLOWEST_MODULES = (
    "test_flink_cluster",
    "test_outage",
    "test_streaming_e2e",
    "test_restart",
    "test_faults_e2e",
    "test_flink_checkpoints",
    "test_local_kafka",
    "test_operator_topics",
    "test_operator_restarts",
    "test_benchmarks_smoke",
    "test_schema_registry_e2e",
    "test_quiet_failures",
    "test_operator_partitions",
    "test_prometheus_e2e",
    "test_stop",
    "test_demo",
    "test_baseline_topic",
)
"""`make test` runs on three pytest-xdist workers (scripts/test.sh), a test file at a time (`--dist loadfile`, so a
module fixture is built once): the kinds and modules that take longest start first (measured
2026-12-06, a quiet machine, each module's total), the ones that keep both cores busy (Flink's
JVMs) between ones that mostly wait on live streams, and the short ones fill the gaps at the end."""


def _run_rank(item: pytest.Item) -> tuple[int, int]:
    stem = Path(str(item.path)).stem
    module = SLOWEST_MODULES.index(stem) if stem in SLOWEST_MODULES else len(SLOWEST_MODULES)
    return RUN_ORDER.get(_kind(item) or "unit", 3), module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_run_rank)
    for item in items:
        kind = _kind(item)
        if kind is None:
            continue
        if kind not in SERVICE_KINDS and item.get_closest_marker("services"):
            raise pytest.UsageError(
                f"{item.nodeid} is marked services but lives in tests/{kind}, whose tests start "
                "no service: move it to tests/pipeline or tests/e2e"
            )
        item.add_marker(kind)
        if kind in SERVICE_KINDS:
            item.add_marker("services")


def _guard(active: bool, who: str, *, connect: bool = False) -> None:
    _service_guard.activate(active, who, connect=connect)
    if active:
        os.environ[_service_guard.ENV_FORBID] = "1"
    elif not NO_SERVICES_RUN:
        os.environ.pop(_service_guard.ENV_FORBID, None)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> object:
    # Importing test modules and kldrift modules (doctests) starts nothing and connects nowhere.
    _guard(True, "collection (importing test and kldrift modules)", connect=True)
    try:
        return (yield)
    finally:
        _guard(NO_SERVICES_RUN, "")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    # Active from the first fixture's set-up to the last teardown, module fixtures included.
    guarded = NO_SERVICES_RUN or item.get_closest_marker("services") is None
    _guard(guarded, item.nodeid)
    try:
        return (yield)
    finally:
        _guard(NO_SERVICES_RUN, "")


@pytest.fixture(autouse=True)
def _no_service_started_by_a_child(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if a child process of it was refused a service (its log line says which)."""
    log = request.config.stash[_GUARD_LOG]
    seen = log.stat().st_size if log.exists() else 0
    yield
    if log.exists() and log.stat().st_size > seen:
        with log.open(encoding="utf-8") as f:
            f.seek(seen)
            new = f.read().strip()
        if not getattr(request.node, "_expects_guard", False):
            pytest.fail(new, pytrace=False)


@pytest.fixture
def expect_guard(request: pytest.FixtureRequest) -> Callable[[], str]:
    """For the guard's own tests: a refused start does not fail the test; the function returns
    the refusals logged since the test began."""
    request.node._expects_guard = True
    log = request.config.stash[_GUARD_LOG]
    seen = log.stat().st_size if log.exists() else 0

    def refusals() -> str:
        if not log.exists():
            return ""
        with log.open(encoding="utf-8") as f:
            f.seek(seen)
            return f.read()

    return refusals


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a local Kafka broker, started once and always stopped."""
    from kldrift.local.kafka import LocalKafka

    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"))
    atexit.register(broker.stop)  # belt and braces: stop() is idempotent
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Confluent-compatible URL of a local Schema Registry (Apicurio, in-memory), started
    once and always stopped."""
    from kldrift.local.registry import LocalRegistry

    registry = LocalRegistry(tmp_path_factory.mktemp("registry"))
    atexit.register(registry.stop)  # stop() is idempotent
    try:
        registry.start()
        yield registry.url
    finally:
        registry.stop()


def _kafka_io_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("kafka-io-")}


@pytest.fixture(autouse=True)
def _no_kafka_client_left_running() -> Iterator[None]:
    """Warn of a test that leaves a kafka-python client's IO thread running: once the broker
    stops, such a client logs connection errors until the run ends."""
    before = _kafka_io_threads()
    yield
    left = _kafka_io_threads() - before
    if left:
        warnings.warn(f"left a Kafka client running: {', '.join(sorted(left))}", stacklevel=1)
