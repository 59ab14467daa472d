"""The CLI's one-line presentation of the errors a user can fix (`kldrift.exceptions`), raised
here or inside a pipeline (no Beam import here): each becomes one line on stderr, never a
traceback."""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kldrift.exceptions import FlinkSetupError as FlinkSetupError
from kldrift.exceptions import InputNotFound as InputNotFound
from kldrift.exceptions import KldriftError, user_error_types
from kldrift.exceptions import UserError as UserError


@contextmanager
def user_errors(*, batch_job: bool = False) -> Iterator[None]:
    """Turn errors a user can fix, raised here or inside a pipeline, into one-line UserErrors.

    A pipeline that fails on one (a baseline with no values to learn from, say) is not also
    logged by the runner and its worker, traceback after traceback (hundreds of lines). For a
    `batch_job`, the tracebacks its worker prints are held until it ends, and shown only when it
    did not fail on a user error (the worker's threads may print before the failure is known)."""
    echo = _UserErrorEcho(hold=batch_job)
    loggers = [logging.getLogger(name) for name in _RUNNER_FAILURE_LOGGERS]
    for logger in loggers:
        logger.addFilter(echo)
    stderr = sys.stderr
    quiet_stderr = _UserErrorStderr(stderr, echo, hold=batch_job)
    sys.stderr = quiet_stderr
    failed_on_user_error = False
    try:
        yield
    except Exception as err:
        line = str(err) if isinstance(err, KldriftError) else _user_error_line(str(err))
        if line is None:
            raise
        # The job is over: what its runner and worker threads log while they stop is noise.
        failed_on_user_error = echo.job_failed = True
        _quiet_runner_threads()
        raise UserError(line) from None
    finally:
        if not failed_on_user_error:
            sys.stderr = stderr
            for logger in loggers:
                logger.removeFilter(echo)
            for traceback_text in quiet_stderr.held:
                stderr.write(traceback_text)
            for record in echo.held:
                logging.getLogger(record.name).handle(record)


class _UserErrorStderr:
    """stderr without the tracebacks Beam's SDK worker prints itself (not through logging) for a
    bundle that failed on a user error, or while it stops after one; everything else written
    goes through."""

    def __init__(self, stream: Any, echo: _UserErrorEcho, hold: bool) -> None:
        self._stream = stream
        self._echo = echo
        self._hold = hold
        self.held: list[str] = []
        self._dropped = False

    def write(self, text: str) -> int:
        if "Traceback (most recent call last)" in text:
            if self._echo.job_failed or _user_error_line(text) is not None:
                self._dropped = True
                return len(text)
            if self._hold:
                self.held.append(text + "\n")
                self._dropped = True
                return len(text)
        if self._dropped and text == "\n":  # print()'s end of the dropped traceback
            self._dropped = False
            return len(text)
        self._dropped = False
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_RUNNER_FAILURE_LOGGERS = (
    "",  # the root logger: Beam's portable runner logs a failed bundle there
    "apache_beam.runners.common",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.worker.data_plane",
    "apache_beam.runners.portability.portable_runner",
    "PrismJobServer",  # Prism's own log, relayed by Beam
)
"""Where Beam and Prism log a failed bundle, with the user code's traceback."""


class _UserErrorEcho(logging.Filter):
    """Drops a runner's log of a failure that a user error caused: user_errors says it once.

    With `hold` (a batch job), a record carrying a traceback is held until the job ends, and
    logged then only if the job did not fail on a user error: the worker may log the aftermath
    of the failure (Prism 2.78 answers a finished bundle's late request with an error, which the
    worker logs with its traceback) before the failure reaches user_errors."""

    job_failed = False

    def __init__(self, hold: bool = False) -> None:
        super().__init__()
        self._hold = hold
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        # Levels are not to be trusted here: Beam's own filter on the Prism log (added later,
        # so run after this one) raises a relayed line from INFO to its level in Prism.
        if self.job_failed:
            return False
        text = record.getMessage()
        if record.exc_info:
            text += "".join(traceback.format_exception(*record.exc_info))
        if _user_error_line(text) is not None:
            return False
        if self._hold and "Traceback (most recent call last)" in text:
            self.held.append(record)
            return False
        return True


def _quiet_runner_threads() -> None:
    """After a pipeline failed on a user error, the worker's gRPC threads die with the job and
    would print their tracebacks: nothing a user can act on."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.exc_value).__module__.startswith("grpc"):
            return
        previous(args)

    threading.excepthook = hook


def _user_error_line(text: str) -> str | None:
    """A pipeline failure that wraps one of our user errors: its message, without the trace."""
    # KafkaOutageError: `kldrift run` says an outage past kafka.outage_timeout in one line; the
    # worker prints the traceback of each client that gave up (reader and writer may race).
    # The last one named: a runner's wrapper repeats the message of the error it wraps.
    markers = list(_user_error_marker().finditer(text))
    if not markers:
        return None
    message = text[markers[-1].end() :].splitlines()[0]
    return message.split(" [while running")[0].strip()


def _user_error_marker() -> re.Pattern[str]:
    """`ConfigError: `, `BaselineMismatch: `...: any class of the hierarchy, as a traceback names
    it (its bare name, or dotted with its module)."""
    names = "|".join(sorted((cls.__name__ for cls in user_error_types()), key=len, reverse=True))
    return re.compile(rf"(?<![\w])(?:{names}): ")
