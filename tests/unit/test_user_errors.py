"""user_errors: a job that fails on a user error says so in one line, whatever its worker logged
on the way; a job that fails otherwise keeps every traceback its worker logged."""

from __future__ import annotations

import io
import logging
import sys
import threading
import traceback
from collections.abc import Iterator

import pytest

from kldrift import errors
from kldrift.errors import UserError, user_errors

WORKER = logging.getLogger("apache_beam.runners.worker.sdk_worker")
USER_FAILURE = (
    "Pipeline job-001 failed in state FAILED: BaselineError: feature 'never_there': no numeric "
    "values to learn edges from [while running 'Assemble']"
)


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """What a handler on the root logger (the CLI's) writes. After a user error, user_errors
    leaves the process quiet on purpose (the CLI exits): the fixture undoes that."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    stderr, excepthook = sys.stderr, threading.excepthook
    yield stream
    root.removeHandler(handler)
    sys.stderr, threading.excepthook = stderr, excepthook
    for logger in (root, WORKER, *map(logging.getLogger, errors._RUNNER_FAILURE_LOGGERS)):
        for quiet in [f for f in logger.filters if isinstance(f, errors._UserErrorEcho)]:
            logger.removeFilter(quiet)


def _worker_logs_a_late_request_error() -> None:
    # What the SDK worker logs when Prism 2.78 refuses a finished bundle's late request: the
    # traceback is in the message, before the job's failure reaches user_errors.
    try:
        raise RuntimeError("worker_id: 'job-001' read from context metadata but not registered")
    except RuntimeError:
        WORKER.error(
            "Error processing instruction inst005. Original traceback is\n%s\n",
            traceback.format_exc(),
        )


def test_a_batch_job_failing_on_a_user_error_prints_one_line_not_the_workers_traceback(
    log: io.StringIO,
) -> None:
    with pytest.raises(UserError) as failure, user_errors(batch_job=True):
        _worker_logs_a_late_request_error()
        raise RuntimeError(USER_FAILURE)
    assert str(failure.value) == "feature 'never_there': no numeric values to learn edges from"
    assert log.getvalue() == ""


def test_a_batch_job_failing_otherwise_keeps_the_workers_traceback(log: io.StringIO) -> None:
    with pytest.raises(RuntimeError, match="disk full"), user_errors(batch_job=True):
        _worker_logs_a_late_request_error()
        assert log.getvalue() == ""  # held while the job runs
        raise RuntimeError("disk full")
    assert "Error processing instruction inst005" in log.getvalue()
    assert "Traceback (most recent call last)" in log.getvalue()
    assert "not registered" in log.getvalue()


def test_a_batch_job_that_succeeds_keeps_the_workers_traceback(log: io.StringIO) -> None:
    with user_errors(batch_job=True):
        _worker_logs_a_late_request_error()
    assert "Error processing instruction inst005" in log.getvalue()
