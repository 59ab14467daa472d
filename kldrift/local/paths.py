"""Where kldrift keeps what its set-up installs (outside the repository, reused across runs)."""

from __future__ import annotations

from pathlib import Path

from kldrift.pipeline.prism import cache_root


def cache_dir() -> Path:
    """The cache root (`cache_root`: $KLDRIFT_HOME, else ~/.cache/kldrift), created."""
    path = cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path
