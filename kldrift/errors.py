"""Errors a user can cause and fix, shared by the pipelines, the launchers and the CLI (no Beam
import here): each becomes one line on stderr, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class InputNotFound(ValueError):
    """No file matched the input path or glob."""


class FlinkSetupError(RuntimeError):
    """The Flink job server could not be installed, or a restore could not be set up."""


class UserError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from kldrift.binning import BaselineMismatch
    from kldrift.io.kafka_client import KafkaSetupError
    from kldrift.schemas.baseline import BaselineError
    from kldrift.schemas.config import ConfigError

    return (
        ConfigError,
        BaselineError,
        BaselineMismatch,
        InputNotFound,
        KafkaSetupError,
        FlinkSetupError,
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn errors a user can fix, raised here or inside a pipeline, into one-line UserErrors."""
    try:
        yield
    except Exception as err:
        if isinstance(err, _user_error_types()):
            raise UserError(str(err)) from None
        line = _user_error_line(str(err))
        if line is None:
            raise
        raise UserError(line) from None


def _user_error_line(text: str) -> str | None:
    """A pipeline failure that wraps one of our user errors: its message, without the trace."""
    for name in ("BaselineError", "BaselineMismatch", "ConfigError", "KafkaSetupError"):
        marker = f"{name}: "
        at = text.rfind(marker)
        if at >= 0:
            message = text[at + len(marker) :].splitlines()[0]
            return message.split(" [while running")[0].strip()
    return None
