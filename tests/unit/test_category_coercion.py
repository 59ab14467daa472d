"""One coercion of categorical values: the baseline builder learns categories from exactly the
texts streaming bins them under (kldrift.binning.category_of), worked out here by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np

from kldrift.binning import FeatureBins, category_of
from kldrift.events import EventBatch
from kldrift.pipeline.baseline import _category_counts

LONE_SURROGATE = "\ud800"
VALUES = ["a", True, False, 3, 3.0, None, {"x": 1}, ["a"], LONE_SURROGATE, "a"]


def test_category_texts() -> None:
    assert [category_of(v) for v in VALUES] == [
        "a", "true", "false", "3", None, None, None, None, LONE_SURROGATE, "a"
    ]  # fmt: skip


def test_the_baseline_learns_what_streaming_bins() -> None:
    events = [{"c": v} for v in VALUES]
    batch = EventBatch(
        events=events,
        event_time_us=np.zeros(len(events), dtype=np.int64),
        keys=[None] * len(events),
        values=[b""] * len(events),
        offsets=list(range(len(events))),
    )
    (name, learned), *rest = list(_category_counts(batch, ["c"]))
    assert rest == [] and name == "c"
    # A lone surrogate cannot be written as a category; everything else countable is learned.
    assert learned == Counter({"a": 2, "true": 1, "false": 1, "3": 1})
    bins = FeatureBins.categorical("c", ["a", "true", "3"])
    # Slots: a, true, 3, __other__ (false, the lone surrogate), missing (None), invalid (3.0,
    # the object, the list).
    assert bins.count(VALUES).tolist() == [2, 1, 1, 2, 1, 3]
