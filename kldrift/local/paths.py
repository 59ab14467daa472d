"""Where kldrift keeps what its set-up installs (outside the repository, reused across runs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache root: $KLDRIFT_HOME, else ~/.cache/kldrift."""
    root = os.environ.get("KLDRIFT_HOME") or os.path.join(Path.home(), ".cache", "kldrift")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
