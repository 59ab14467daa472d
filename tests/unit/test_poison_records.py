"""No record can fail the job: arbitrary bytes and arbitrary JSON values through the decoder and
the binning (property-based, hypothesis), and the worst records one by one. Every record is an
event or a dead letter with a documented reason: records = events + dead letters."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _json_strategies import json_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kldrift.binning import FeatureBins
from kldrift.events import (
    DEAD_LETTER_REASONS,
    MAX_KEY_CHARS,
    MAX_NESTING,
    DeadLetter,
    EventBatch,
    EventDecoder,
    RecordBatch,
    dead_letter_json,
    field_getter,
)
from kldrift.schemas.config import parse_config

NOW_US = 1_764_000_000 * 1_000_000  # 2025-11-24T16:00:00Z
HOUR_US = 3_600 * 1_000_000

times = (
    st.floats(min_value=1.5e9, max_value=1.8e9)
    | st.integers(min_value=-(10**25), max_value=10**25)
    | json_values
)
events = st.fixed_dictionaries(
    {},
    optional={
        "ts": times,
        "model": json_values | st.sampled_from(["model-a", "model-b"]),
        "x": json_values,
        "c": json_values,
        "payload": st.dictionaries(st.sampled_from(["x", "c"]), json_values, max_size=2),
    },
)


def _decoder(**fields: Any) -> EventDecoder:
    return EventDecoder(parse_config(_config(**fields)))


def _config(**fields: Any) -> dict[str, Any]:
    return {
        "name": "m",
        "event_time_field": "ts",
        "window": {"size": "10m", "period": "1m"},
        "features": [
            {"name": "x", "kind": "numeric", "edges": [0, 10]},
            {"name": "c", "kind": "categorical", "categories": ["a", "7", "true"]},
        ],
        **fields,
    }


def _decode(values: list[Any], decoder: EventDecoder, **kwargs: Any) -> EventBatch:
    return decoder.decode(RecordBatch(values, list(range(len(values))), source="t", **kwargs))


def _assert_accounted(values: list[Any], decoded: EventBatch) -> None:
    """records = events + dead letters; each dead letter has a documented reason, its record's
    raw value and offset; each event a time within years 1-9999 and a text key."""
    assert len(decoded.events) + len(decoded.dead_letters) == len(values)
    assert len(decoded.event_time_us) == len(decoded.keys) == len(decoded.values)
    assert len(decoded.offsets) == len(decoded.events)
    for dead in decoded.dead_letters:
        assert dead.reason in DEAD_LETTER_REASONS, dead
        assert dead.value is values[dead.offset]
        json.loads(dead_letter_json(dead))  # the replay writer's line is JSON, whatever the value
        dead.detail.encode("ascii")  # a Kafka header
    accounted = sorted([*decoded.offsets, *(d.offset for d in decoded.dead_letters)])
    assert accounted == list(range(len(values)))
    for key in decoded.keys:
        assert key is None or (isinstance(key, str) and len(key) <= MAX_KEY_CHARS)
        if key is not None:
            key.encode("utf-8")  # every report's message key carries it


def _bin(decoded: EventBatch) -> list[np.ndarray]:
    """Bins every decoded event's features the way the Bin step does (count_groups per key)."""
    keys = sorted(set(decoded.keys), key=lambda k: (k is not None, k or ""))
    group = np.asarray([keys.index(k) for k in decoded.keys], dtype=np.int64)
    bins = [
        FeatureBins.numeric("x", [0, 10]),
        FeatureBins.numeric("payload.x", [0, 10]),
        FeatureBins.categorical("c", ["a", "7", "true"]),
        FeatureBins.categorical("payload.c", ["a", "7", "true"]),
    ]
    return [
        b.count_groups([field_getter(b.name)(e) for e in decoded.events], group, len(keys))
        for b in bins
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.none(), max_size=20))
def test_arbitrary_bytes_are_events_or_dead_letters(values: list[bytes | None]) -> None:
    for decoder in (_decoder(), _decoder(key_field="model")):
        decoded = _decode(values, decoder, max_event_time_us=NOW_US + HOUR_US)
        _assert_accounted(values, decoded)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values | events, max_size=20), st.sampled_from(["s", "ms"]))
def test_arbitrary_json_is_accounted_for_and_binned(values: list[Any], unit: str) -> None:
    raw = [json.dumps(v).encode() for v in values]
    for decoder in (
        _decoder(event_time_unit=unit),
        _decoder(event_time_unit=unit, key_field="model"),
    ):
        for bound in (None, NOW_US + HOUR_US):
            decoded = _decode(raw, decoder, max_event_time_us=bound)
            _assert_accounted(raw, decoded)
            for counts in _bin(decoded):
                # Every event lands in exactly one slot (a bin, missing or invalid) per feature.
                assert counts.sum() == len(decoded.events)
                assert (counts >= 0).all()
            if bound is not None:
                assert (decoded.event_time_us <= bound).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values, max_size=30))
def test_binning_takes_any_json_value(values: list[Any]) -> None:
    numeric = FeatureBins.numeric("x", [-1.5, 0, 1e300])
    categorical = FeatureBins.categorical("c", ["a", "7", "true", ""])
    for bins in (numeric, categorical):
        codes = bins.codes(values)
        assert len(codes) == len(values)
        assert ((codes >= 0) & (codes < bins.n_bins + 2)).all()
    # A number is binned (NaN is missing); text or a bool is invalid for a numeric feature.
    for value, code in zip(values, numeric.codes(values), strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            expected = numeric.missing_slot if value is None else numeric.invalid_slot
        elif isinstance(value, float) and math.isnan(value):
            expected = numeric.missing_slot
        else:
            expected = sum(1 for edge in (-1.5, 0, 1e300) if value >= edge)
        assert code == expected, value


# --- the battery, record by record ------------------------------------------------------------


def _reasons(values: list[Any], decoder: EventDecoder, **kwargs: Any) -> list[str | None]:
    """Per record: its dead letter's reason, or None when it decoded as an event; the same
    through `decode_columns`, the decode the jobs use."""
    decoded = _decode(values, decoder, **kwargs)
    _assert_accounted(values, decoded)
    by_offset = {d.offset: d.reason for d in decoded.dead_letters}
    reasons = [by_offset.get(i) for i in range(len(values))]
    columns = decoder.decode_columns(
        RecordBatch(values, list(range(len(values))), source="t", **kwargs)
    )
    by_offset = {d.offset: d.reason for d in columns.dead_letters}
    assert [by_offset.get(i) for i in range(len(values))] == reasons
    assert columns.offsets == decoded.offsets
    assert columns.event_time_us.tolist() == list(decoded.event_time_us)
    return reasons


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "null_value"),  # a Kafka tombstone
        (b"", "not_json"),
        (b"\xff\xfe\xfa", "not_json"),
        (b'{"ts": 1700000000, "x": "\xc3\x28"}', "not_json"),  # invalid UTF-8 inside a string
        (_nested(100_000), "too_deep"),  # json.loads raises RecursionError on this
        (_nested(MAX_NESTING + 1), "too_deep"),  # parses, but deeper than the limit
        (b'{"ts": 1700000000, "x": ' + _nested(MAX_NESTING) + b"}", "too_deep"),
        (b'{"ts": 1' + b"0" * 400 + b"}", "invalid_event_time"),  # an int past every float
        (b'{"ts": 1' + b"0" * 5000 + b"}", "not_json"),  # past Python's 4,300-digit int limit
        (b'{"ts": 1e400}', "invalid_event_time"),
        (b'{"ts": 1.797693134862316e302}', "invalid_event_time"),  # finite; its us overflow
        (b'{"ts": NaN}', "invalid_event_time"),
        (b'{"ts": "1700000000"}', "invalid_event_time"),
        (b'{"ts": true}', "invalid_event_time"),
        (b'{"ts": {"s": 1}}', "invalid_event_time"),
        (b'{"ts": "0001-01-01T00:00:00+01:00"}', "invalid_event_time"),  # before year 1 in UTC
        (b'{"ts": "9999-12-31T23:59:00Z"}', "invalid_event_time"),  # its window ends after 9999
        (b'{"ts": 221845392000}', "future_event_time"),  # year 9000
    ],
)
def test_each_poison_record_is_dead_lettered_with_its_reason(
    value: bytes | None, reason: str
) -> None:
    assert _reasons([value], _decoder(), max_event_time_us=NOW_US + HOUR_US) == [reason]


def test_nesting_up_to_the_limit_is_an_event() -> None:
    # Depth MAX_NESTING counting the event object itself: {"ts": ..., "x": [[...]]}.
    value = b'{"ts": 1700000000, "x": ' + _nested(MAX_NESTING - 1) + b"}"
    assert _reasons([value], _decoder()) == [None]


def test_big_numbers_are_binned_in_the_outer_bins() -> None:
    values = [
        json.dumps({"ts": 1_700_000_000, "x": x}).encode()
        for x in (10**30, -(10**30), 10**400, 1e308)
    ] + [b'{"ts": 1700000000, "x": 1e400}', b'{"ts": 1700000000, "x": -Infinity}']
    decoded = _decode(values, _decoder())
    assert len(decoded) == 6
    counts = FeatureBins.numeric("x", [0, 10]).count([e["x"] for e in decoded.events])
    # bins (-inf, 0), [0, 10), [10, +inf), missing, invalid
    assert counts.tolist() == [2, 0, 4, 0, 0]


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("model-a", None),
        ("ü-model", None),  # non-ASCII but valid text: the general path accepts it
        (7, None),
        ("m" * MAX_KEY_CHARS, None),
        ("m" * (MAX_KEY_CHARS + 1), "invalid_key"),
        ("\ud800", "invalid_key"),  # JSON can carry a lone surrogate; UTF-8 cannot
        (None, "missing_key"),
        ([1], "missing_key"),
    ],
)
def test_keys_that_cannot_name_a_report_are_dead_lettered(key: Any, reason: str | None) -> None:
    value = json.dumps({"ts": 1_700_000_000, "model": key}).encode()
    assert _reasons([value], _decoder(key_field="model")) == [reason]


def test_future_event_time_is_judged_against_the_given_bound_only() -> None:
    # The bound is the reader's clock + kafka.max_future; without one (replay) nothing is future.
    bound = NOW_US + HOUR_US
    values = [
        json.dumps({"ts": bound / 1e6}).encode(),  # exactly at the bound: accepted
        json.dumps({"ts": bound / 1e6 + 0.001}).encode(),  # 1 ms past it
        json.dumps({"ts": (bound - 500_000) / 1e6}).encode(),  # inside the fast path's margin
        json.dumps({"ts": 221_845_392_000}).encode(),  # year 9000
        json.dumps({"ts": "8999-12-31T00:00:00Z"}).encode(),
    ]
    assert _reasons(values, _decoder(), max_event_time_us=bound) == [
        None,
        "future_event_time",
        None,
        "future_event_time",
        "future_event_time",
    ]
    assert _reasons(values, _decoder()) == [None] * 5
    ms = _decoder(event_time_unit="ms")
    in_ms = [
        json.dumps({"ts": bound // 1000}).encode(),
        json.dumps({"ts": bound // 1000 + 1}).encode(),
    ]
    assert _reasons(in_ms, ms, max_event_time_us=bound) == [None, "future_event_time"]


def test_future_dead_letter_says_when_and_why() -> None:
    decoded = _decode(
        [json.dumps({"ts": 221_845_392_000}).encode()],
        _decoder(),
        max_event_time_us=NOW_US + HOUR_US,
    )
    assert decoded.dead_letters[0].detail == (
        "event time 9000-01-01T00:00:00Z is after 2025-11-24T17:00:00Z "
        "(the reader's clock + kafka.max_future)"
    )


def test_a_tombstone_dead_letter_is_written_as_a_null_value() -> None:
    line = json.loads(dead_letter_json(DeadLetter(None, "null_value", "no value", "t", 0, 5)))
    assert line["value"] is None
    assert line["reason"] == "null_value"
    assert line["offset"] == 5


def test_a_batch_of_the_whole_battery_accounts_for_every_record() -> None:
    battery: list[bytes | None] = [
        None,
        b"",
        b"\xff",
        _nested(100_000),
        b'{"ts": 1700000000, "x": "' + b"y" * 5_000_000 + b'"}',  # 5 MB, binned
        b'{"ts": NaN}',
        b'{"ts": 1700000000, "x": NaN, "c": Infinity}',  # binned: missing, invalid
        b'{"ts": 1700000000, "x": 1e400, "c": 123456789012345678901234567890}',
        b'{"ts": 221845392000}',
    ]
    reasons = Counter(_reasons(battery, _decoder(), max_event_time_us=NOW_US + HOUR_US))
    assert reasons == Counter(
        {
            None: 3,
            "null_value": 1,
            "not_json": 2,
            "too_deep": 1,
            "invalid_event_time": 1,
            "future_event_time": 1,
        }
    )


def test_readme_names_every_dead_letter_reason() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    bins = readme[readme.index("## Bins") : readme.index("## The drift report")]
    assert [r for r in DEAD_LETTER_REASONS if f"`{r}`" not in bins] == []


def test_a_csv_file_with_bad_bytes_or_odd_rows_replays_every_row(tmp_path: Path) -> None:
    from kldrift.io.files import _ReadBatches

    path = tmp_path / "events.csv"
    path.write_bytes(
        b"ts,x,c\n"
        b"1700000000,1,a\n"
        b"1700000001,2,\xff\xfe\n"  # not UTF-8: the row is a dead letter, the file reads on
        b"1700000002,3,a,extra,cells\n"  # more cells than the header: kept under the key null
        b"1700000003," + b"9" * 200_000 + b",7\n"  # past csv's 128 KiB cell limit
    )
    rows = list(_ReadBatches._csv_lines(str(path)))
    assert [line for line, _ in rows] == [2, 3, 4, 5]
    decoded = _decode([value for _, value in rows], _decoder())
    _assert_accounted([value for _, value in rows], decoded)
    assert [d.reason for d in decoded.dead_letters] == ["not_json"]
    assert [e["c"] for e in decoded.events] == ["a", "a", 7]
    assert decoded.events[1]["null"] == ["extra", "cells"]
    assert decoded.events[2]["x"] == math.inf  # a 200,000-digit number: past every edge
