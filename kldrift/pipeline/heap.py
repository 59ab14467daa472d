"""The process's heap while a job runs in it: what was allocated before the job is left out of
Python's cyclic garbage collector's passes.

Under LOOPBACK (Prism's default here) the SDK worker runs in the process that submitted the job.
The collector's full passes walk every tracked object, those of the modules, the config and the
baseline included, many times a job: at 10,000 keys they took 0.9-1.5 s of a 7.4-8.5 s
`kldrift replay`, 0.26 s with the objects held before the job frozen (`gc.freeze`; 2026-12-06,
benchmarks/README).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """`gc.freeze()` for the block, `gc.unfreeze()` after it: the objects allocated before it are
    not walked by the collector meanwhile, and are collectable again after. Nothing is done in a
    process that froze objects itself (unfreezing would undo that)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
