"""kldrift.pipeline.heap: the objects held before a job are frozen while it runs, and collectable
again after it, even when it fails; a process that froze objects itself keeps them frozen."""

from __future__ import annotations

import gc
import weakref

import pytest

from kldrift.pipeline.heap import older_objects_frozen


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_objects_before_the_job_are_frozen_during_it_and_collectable_after() -> None:
    assert gc.get_freeze_count() == 0
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    with older_objects_frozen():
        assert gc.get_freeze_count() > 0
        del cycle
        gc.collect()
        assert alive() is not None, "a frozen cycle is not collected"
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None, "collected after the job"


def test_a_failing_job_unfreezes_too() -> None:
    with pytest.raises(RuntimeError), older_objects_frozen():
        raise RuntimeError("the job failed")
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_keeps_them_frozen() -> None:
    """Its frozen cycle stays uncollected after the job (a count of frozen objects would not do:
    another thread's frozen objects may be freed meanwhile, as under pytest-xdist)."""
    cycle = _Cycle()
    alive = weakref.ref(cycle)
    gc.freeze()
    try:
        del cycle
        with older_objects_frozen():
            pass
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert alive() is not None, "the process's frozen cycle was unfrozen and collected"
    finally:
        gc.unfreeze()
    gc.collect()
    assert alive() is None
