"""The errors a user can cause and fix, in one hierarchy under `KldriftError`; this module imports
nothing of kldrift, so every other module may raise them. Their one-line presentation (no
traceback) is the CLI's, in `kldrift.errors`.

Each keeps the built-in base it had before it joined the hierarchy (`ValueError` for a bad input,
`RuntimeError` for a service that cannot be used), so code that caught those still does.

>>> issubclass(BaselineMismatch, BaselineError) and issubclass(BaselineError, KldriftError)
True
"""

from __future__ import annotations


class KldriftError(Exception):
    """An error a user can fix: its message names the input and what to do, in one line."""


class ConfigError(KldriftError, ValueError):
    """A config that cannot be used; the message names the field and what is wrong."""


class BaselineError(KldriftError, ValueError):
    """A baseline file that cannot be used; the message names the feature or field."""


class BaselineMismatch(BaselineError):
    """The baseline's bins do not match the config; the message names the feature."""


class InputNotFound(KldriftError, ValueError):
    """No file matched the input path or glob."""


class UnreadableInput(KldriftError, ValueError):
    """An input file that is not of its format (by its extension or `--format`): the message names
    the file."""


class KafkaSetupError(KldriftError, RuntimeError):
    """Kafka could not be used as configured (unreachable, missing topic...): one line, no
    secrets."""


class ResumeMismatch(KafkaSetupError):
    """The group's resume point was written with another window: resuming would report partial
    windows."""


class SchemaRegistryError(KldriftError, RuntimeError):
    """The schema registry refused kldrift (authentication, a bad setting): one line, no secrets."""


class KafkaOutageError(KldriftError, RuntimeError):
    """Kafka stayed unreachable longer than kafka.outage_timeout (one line, no secrets)."""


class TopicMissingError(KafkaOutageError):
    """A topic the job writes to does not exist (deleted while it ran) and the broker does not
    create it: the job stops as after an outage, in one line, with nothing committed past what
    was written."""


class FlinkSetupError(KldriftError, RuntimeError):
    """The Flink job server could not be installed, or a restore could not be set up."""


class PrismNotInstalled(KldriftError, RuntimeError):
    """Beam's Prism runner is not where kldrift's set-up puts it."""


class UserError(KldriftError):
    """A command's own check failed (a missing flag, a bad value): printed as one line, exit 2."""


def user_error_types() -> list[type[KldriftError]]:
    """Every class of the hierarchy: `KldriftError`, then its subclasses, level by level."""
    found: list[type[KldriftError]] = [KldriftError]
    for cls in found:  # the list grows while it is walked
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return found


__all__ = [
    "BaselineError",
    "BaselineMismatch",
    "ConfigError",
    "FlinkSetupError",
    "InputNotFound",
    "KafkaOutageError",
    "KafkaSetupError",
    "KldriftError",
    "PrismNotInstalled",
    "ResumeMismatch",
    "TopicMissingError",
    "UnreadableInput",
    "UserError",
    "user_error_types",
]
