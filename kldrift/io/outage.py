"""Riding out a Kafka outage: which errors mean "the cluster is unreachable", how long to back
off, and when an outage has lasted longer than `kafka.outage_timeout` (the job then stops)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

from kldrift.exceptions import KafkaOutageError as KafkaOutageError
from kldrift.exceptions import TopicMissingError as TopicMissingError

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
HANDOFF_S = 30.0
"""How long a client that gave up waits for an in-process caller to stop the job (see
`on_timeout`) before it raises inside the runner."""
_LOG = logging.getLogger(__name__)
_timeout_handler: Callable[[KafkaOutageError], None] | None = None


def on_timeout(handler: Callable[[KafkaOutageError], None] | None) -> None:
    """Hand outages past the timeout to `handler` first (kldrift run with an in-process SDK
    harness cancels the job and says so in one line; the runner would print tracebacks)."""
    global _timeout_handler
    _timeout_handler = handler


OUTAGE_MARK = "kafka.outage_timeout"
"""In every KafkaOutageError message: how its traces in runner logs are recognised."""
MISSING_MARK = "does not exist (deleted?)"
"""In every TopicMissingError message, likewise."""


def outage_line(text: str) -> str | None:
    """The KafkaOutageError (or TopicMissingError) message in a job failure's text (a runner's
    traceback), or None."""
    found = [
        (text.rfind(marker), marker)
        for marker in (f"{KafkaOutageError.__name__}: ", f"{TopicMissingError.__name__}: ")
    ]
    at, marker = max(found)
    if at < 0:
        return None
    return text[at + len(marker) :].splitlines()[0].split(" [while running")[0].strip()


def stop_job(err: KafkaOutageError) -> NoReturn:
    """Raise `err` after handing it to the in-process caller, if any, to stop the job in one line
    (see on_timeout)."""
    handler = _timeout_handler
    if handler is not None:
        handler(err)
        time.sleep(HANDOFF_S)  # the job is being cancelled, this process ends meanwhile
    raise err from None


class DropOutageTraces(logging.Filter):
    """Drops the runner's and the SDK harness's log records of a KafkaOutageError (each a
    traceback, several per failure): the job's end says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KafkaOutageError):
            return False
        try:
            message = record.getMessage()
            return OUTAGE_MARK not in message and MISSING_MARK not in message
        except Exception:  # a malformed record: not ours to judge
            return True


def is_unreachable(err: BaseException) -> bool:
    """Whether `err` is kafka-python saying the cluster (or a broker of it) cannot be reached now:
    worth retrying, unlike a bad setting or a refused authentication."""
    from kafka.errors import KafkaError

    if not isinstance(err, KafkaError):
        return False
    return bool(getattr(err, "retriable", False)) or type(err).__name__ == "NoBrokersAvailable"


class Outage:
    """How long `bootstrap` has been unreachable, for one client. `reached()` after any answer;
    `failed()` after an unreachable error: the seconds to wait before trying again, or
    KafkaOutageError once the outage is older than `timeout_s`."""

    def __init__(self, bootstrap: str, timeout_s: float, what: str, service: str = "Kafka") -> None:
        self.bootstrap = bootstrap
        self.service = service
        self.timeout_s = timeout_s
        self.what = what
        self.since: float | None = None  # wall-clock s of the last answer before the failures
        self._last_answer = time.time()
        self._failures = 0

    def reached(self, at: float | None = None) -> None:
        if self.since is not None:
            _LOG.info(
                "%s: %s at %s answers again after %.0f s",
                self.what,
                self.service,
                self.bootstrap,
                time.time() - self.since,
            )
        self.since = None
        self._failures = 0
        self._last_answer = time.time() if at is None else at

    def failed(self, err: BaseException) -> float:
        now = time.time()
        if self.since is None:
            self.since = self._last_answer
            _LOG.info(
                "%s: %s at %s unreachable (%s); retrying",
                self.what,
                self.service,
                self.bootstrap,
                err,
            )
        if now - self.since > self.timeout_s:
            gave_up = KafkaOutageError(
                f"{self.service} at {self.bootstrap} unreachable for {now - self.since:.0f} s, longer than "
                f"{OUTAGE_MARK} ({self.timeout_s:g} s): {self.what} stopped "
                f"({type(err).__name__})"
            )
            stop_job(gave_up)
        self._failures += 1
        return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self._failures - 1))
