"""EventDecoder.decode_columns reads only the fields a job bins (kldrift.event_columns), yet every
record comes out as `decode` says: the same events (times, keys, raw values, offsets, in order),
the same dead letters (reason, detail, value, offset), and each feature's values equal to those
`decode`'s dicts hold, of the same types. Checked against `decode` on arbitrary bytes, arbitrary
JSON and the records where a typed, skipping parse could differ from a full one."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from _json_strategies import json_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kldrift.events import MAX_NESTING, EventBatch, EventDecoder, RecordBatch
from kldrift.schemas.config import parse_config

NOW_US = 1_764_000_000 * 1_000_000
HOUR_US = 3_600 * 1_000_000
FEATURES = ["x", "c", "payload.x", "payload.c"]

times = (
    st.floats(min_value=1.5e9, max_value=1.8e9)
    | st.integers(min_value=1_500_000_000, max_value=1_800_000_000)
    | st.integers(min_value=-(10**25), max_value=10**25)
    | json_values
)
events = st.fixed_dictionaries(
    {},
    optional={
        "ts": times,
        "model": json_values | st.sampled_from(["model-a", "model-b", "ü"]),
        "x": json_values,
        "c": json_values,
        "payload": json_values
        | st.dictionaries(st.sampled_from(["x", "c", "y"]), json_values, max_size=3),
        "other": json_values,
    },
)


def _decoder(**fields: Any) -> EventDecoder:
    return EventDecoder(
        parse_config(
            {
                "name": "m",
                "event_time_field": "ts",
                "window": {"size": "10m", "period": "1m"},
                "features": [
                    {"name": "x", "kind": "numeric", "edges": [0, 10]},
                    {"name": "c", "kind": "categorical", "categories": ["a", "7"]},
                    {"name": "payload.x", "kind": "numeric", "edges": [0, 10]},
                    {"name": "payload.c", "kind": "categorical", "categories": ["a"]},
                    {"name": "pair", "kind": "joint", "of": ["x", "c"]},
                ],
                **fields,
            }
        )
    )


DECODERS = [
    _decoder(),
    _decoder(key_field="model"),
    _decoder(key_field="payload.c", event_time_unit="ms"),
]


def _typed(value: Any) -> Any:
    """A value with its type, NaN comparable: 1 and 1.0 and True differ."""
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    if isinstance(value, list):
        return (list, [_typed(v) for v in value])
    if isinstance(value, dict):
        return (dict, [(k, _typed(v)) for k, v in value.items()])
    return (type(value), value)


def _assert_same(values: list[Any], decoder: EventDecoder, bound: int | None = None) -> None:
    batch = RecordBatch(values, [100 + i for i in range(len(values))], "t", 3, 7, bound)
    expected = decoder.decode(batch)
    batch = RecordBatch(values, [100 + i for i in range(len(values))], "t", 3, 7, bound)
    got = decoder.decode_columns(batch)
    assert got.event_time_us.dtype == np.int64
    assert got.event_time_us.tolist() == expected.event_time_us.tolist()
    assert [_typed(k) for k in got.keys] == [_typed(k) for k in expected.keys]
    assert [v is w for v, w in zip(got.values, expected.values, strict=True)] == [True] * len(got)
    assert got.offsets == expected.offsets
    assert (got.source, got.partition, got.watermark_us) == ("t", 3, 7)
    assert got.dead_letters == expected.dead_letters
    assert got.events == []
    for feature in FEATURES:
        assert [_typed(v) for v in got.column(feature)] == [
            _typed(v) for v in expected.column(feature)
        ], feature


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events | json_values, max_size=12), st.booleans())
def test_arbitrary_json_decodes_as_decode_does(values: list[Any], bounded: bool) -> None:
    raw = [json.dumps(v).encode() for v in values]
    for decoder in DECODERS:
        _assert_same(raw, decoder, NOW_US + HOUR_US if bounded else None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200) | st.none(), max_size=12))
def test_arbitrary_bytes_decode_as_decode_does(values: list[bytes | None]) -> None:
    for decoder in DECODERS:
        _assert_same(values, decoder)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


PLAIN = b'{"ts": 1700000000.5, "model": "m", "x": 3, "c": "a", "payload": {"x": 1.5, "c": "b"}}'
"""A record every path reads as plain."""
DIFFERS = [
    # A typed parse skips what it does not read: each of these skipped values is refused by the
    # full parse (a dead letter), so the record must not be read here.
    b'{"ts": 1700000000, "other": "\xc0\x80"}',  # invalid UTF-8
    b'{"ts": 1700000000, "other": "\xf4\x90\x80\x80"}',
    b'{"ts": 1700000000, "other": "\xff"}',
    b'{"ts": 1700000000, "other": ' + b"9" * 4301 + b"}",  # past Python's int digit limit
    b'{"ts": 1700000000, "other": ' + _nested(MAX_NESTING) + b"}",  # too deep
    # And records the full parse takes after msgspec refuses them (json.loads).
    b'{"ts": 1700000000, "other": NaN}',
    b'{"ts": 1700000000, "x": Infinity}',
    b'{"ts": 1700000000, "other": "\\ud800"}',
    b'{"ts": 1700000000, "x": 1e400}',
    b'{"ts": 1700000000, "other": 1e400}',
    # Duplicate fields (the last one wins), nested paths that are not objects, odd times, keys.
    b'{"ts": 1, "ts": 1700000000, "x": 1, "x": "two"}',
    b'{"ts": 1700000000, "payload": 5}',
    b'{"ts": 1700000000, "payload": null}',
    b'{"ts": 1700000000, "payload": {"x": {"y": 1}}}',
    b'{"ts": 1700000000}',
    b'{"ts": 0}',
    b'{"ts": 0.0}',
    b'{"ts": true}',
    b'{"ts": "2023-11-14T22:13:20Z"}',
    b'{"ts": 221845392000}',
    b'{"ts": 946684799}',  # before min_event_time
    b'{"ts": 1700000000, "model": 7}',
    b'{"ts": 1700000000, "model": "\\u00fc"}',
    b'{"ts": 1700000000, "model": ["a"]}',
    b'{"ts": 1700000000, "model": "' + b"m" * 1001 + b'"}',
    b'{"ts": 1700000000, "model": "\\ud800"}',
    b'{"ts": 1700000000, "x": "\xc3\xbc"}',  # valid UTF-8, not ASCII: read here
    b" " + PLAIN + b"\r\n",
    b"[1, 2]",
    b'"text"',
    b"",
    b"\xef\xbb\xbf" + PLAIN,
    None,
]


@pytest.mark.parametrize("record", DIFFERS)
def test_each_record_that_could_differ_decodes_as_decode_does(record: bytes | None) -> None:
    for decoder in DECODERS:
        for bound in (None, NOW_US + HOUR_US):
            _assert_same([record], decoder, bound)
            _assert_same([PLAIN, record, PLAIN, PLAIN], decoder, bound)


def test_a_batch_of_all_of_them_keeps_the_records_order() -> None:
    values = [v for record in DIFFERS for v in (PLAIN, record)]
    for decoder in DECODERS:
        _assert_same(values, decoder, NOW_US + HOUR_US)
        decoded = decoder.decode_columns(RecordBatch(values, list(range(len(values)))))
        accounted = sorted([*decoded.offsets, *(d.offset for d in decoded.dead_letters)])
        assert accounted == list(range(len(values)))


def test_times_of_one_type_or_mixed_are_decode_s() -> None:
    floats = [b'{"ts": %r}' % (1_700_000_000 + i / 7) for i in range(50)]
    ints = [b'{"ts": %d}' % (1_700_000_000 + i) for i in range(50)]
    ms = [b'{"ts": %d}' % (1_700_000_000_123 + i) for i in range(50)]
    for decoder in DECODERS:
        for values in (floats, ints, ms, floats + ints, [*ints[:1], b'{"ts": 1e400}']):
            _assert_same(values, decoder)
            _assert_same(values, decoder, NOW_US + HOUR_US)


def test_parsed_events_and_tombstones_take_decode_s_path() -> None:
    values: list[Any] = [{"ts": 1_700_000_000, "x": 1, "payload": {"c": "a"}}, None, PLAIN]
    for decoder in DECODERS:
        _assert_same(values, decoder)


def test_a_field_that_is_also_a_path_prefix_is_read_whole() -> None:
    decoder = EventDecoder(
        parse_config(
            {
                "name": "m",
                "event_time_field": "t.s",
                "window": {"size": "10m", "period": "1m"},
                "features": [
                    {"name": "a.b", "kind": "numeric", "edges": [0]},
                    {"name": "a", "kind": "categorical", "categories": ["x"]},
                ],
            }
        )
    )
    values = [
        b'{"t": {"s": 1700000000}, "a": {"b": 2}}',
        b'{"t": {"s": 1700000000}, "a": "x"}',
        b'{"t": {"s": 1700000000}, "a": null}',
        b'{"t": {"s": 1700000000}}',
    ]
    decoded = decoder.decode_columns(RecordBatch(values, list(range(4))))
    assert decoded.column("a.b") == [2, None, None, None]
    assert decoded.column("a") == [{"b": 2}, "x", None, None]
    assert decoded.dead_letters == []


def test_a_batch_decoded_as_columns_has_no_dicts_to_read_other_fields_from() -> None:
    decoded = DECODERS[0].decode_columns(RecordBatch([PLAIN], [0]))
    assert isinstance(decoded, EventBatch) and len(decoded) == 1
    with pytest.raises(KeyError, match="other"):
        decoded.column("other")
