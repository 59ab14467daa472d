"""Where Beam's Prism runner is, as kldrift's set-up built it: for the `--prism_location` flag of
a pipeline of your own (no Beam import here)."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

from kldrift.exceptions import PrismNotInstalled


def prism_location() -> str:
    """The Prism binary kldrift's set-up built, for your pipeline's ``--prism_location`` flag.

    ``$KLDRIFT_PRISM`` if set, else ``prism_binary()``:
    ``~/.cache/kldrift/bin/prism-<apache-beam version>/prism`` (``$KLDRIFT_HOME`` replaces
    ``~/.cache/kldrift``). Without the flag, Beam downloads Prism from GitHub at run time.
    Raises PrismNotInstalled (a KldriftError) if it is not there.

    >>> from kldrift import prism_location
    >>> prism_location().endswith("/prism")
    True
    """
    override = os.environ.get("KLDRIFT_PRISM")
    path = Path(override) if override else prism_binary()
    if not path.is_file():
        raise PrismNotInstalled(
            f"no Prism runner at {path}: `make setup` (or `python -m kldrift.local.setup`) "
            "builds it there, or pass your own with --prism_location"
        )
    return str(path)


def prism_binary() -> Path:
    """Where kldrift's set-up builds Prism for the installed apache-beam (it may not exist yet)."""
    return cache_root() / "bin" / f"prism-{version('apache-beam')}" / "prism"


def cache_root() -> Path:
    """Where kldrift's set-up keeps what it installs: $KLDRIFT_HOME, else ~/.cache/kldrift."""
    return Path(os.environ.get("KLDRIFT_HOME") or Path.home() / ".cache" / "kldrift")
