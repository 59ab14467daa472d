"""EventDecoder parses with msgspec and hands what msgspec refuses to json.loads: every record
comes out exactly as json.loads alone would make it (NaN/Infinity tokens, lone surrogates,
UTF-16, a UTF-8 BOM, huge integers, deep nesting)."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest

from kldrift.events import EventDecoder, RecordBatch
from kldrift.schemas.config import parse_config


def _decoder() -> EventDecoder:
    config = {
        "name": "m",
        "event_time_field": "ts",
        "key_field": "k",
        "window": {"size": "10m", "period": "1m"},
        "features": [{"name": "x", "kind": "numeric", "edges": [0]}],
    }
    return EventDecoder(parse_config(config))


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN equal to NaN, and the same types all the way down (1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# Each is valid for json.loads; msgspec refuses all but the last two.
REFUSED_BY_MSGSPEC = [
    b'{"ts": 1700000100, "k": "a", "x": NaN}',
    b'{"ts": 1700000100, "k": "a", "x": Infinity}',
    b'{"ts": 1700000100, "k": "a", "x": -Infinity}',
    b'{"ts": 1700000100, "k": "a", "x": 1e400}',
    b'{"ts": 1700000100, "k": "a\\ud800", "x": 1}',
    b'{"ts": 1700000100, "k": "a", "x": "\\udc00"}',
    b'\xef\xbb\xbf{"ts": 1700000100, "k": "a", "x": 1}',
    '{"ts": 1700000100, "k": "a", "x": 1}'.encode("utf-16"),
]
ACCEPTED_BY_BOTH = [
    b'{"ts": 1700000100, "k": 123456789012345678901234567890, "x": 18446744073709551616}',
    b'{"ts": 1700000100.5, "k": "a", "x": 0.1, "x": -0.0}',
]


@pytest.mark.parametrize("value", REFUSED_BY_MSGSPEC + ACCEPTED_BY_BOTH)
def test_a_record_decodes_as_json_loads_alone_would(value: bytes) -> None:
    refused = True
    try:
        msgspec.json.decode(value)
        refused = False
    except msgspec.DecodeError:
        pass
    assert refused == (value in REFUSED_BY_MSGSPEC)  # the case really tests the fall-back
    expected = json.loads(value)
    decoded = _decoder().decode(RecordBatch(values=[value], offsets=[7]))
    if decoded.dead_letters:
        # Only a key json.loads gives as a lone surrogate may be refused, and it is named.
        assert "\ud800" in str(expected["k"])
        assert [d.reason for d in decoded.dead_letters] == ["invalid_key"]
        return
    assert len(decoded.events) == 1
    assert _same(decoded.events[0], expected)


def test_records_json_loads_refuses_are_dead_letters_with_its_message() -> None:
    too_big = b'{"ts": 1700000100, "k": "a", "x": ' + b"9" * 5000 + b"}"
    too_deep = b'{"ts": 1700000100, "k": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    bad_utf8 = b'{"ts": 1700000100, "k": "a", "x": "\xff"}'
    decoded = _decoder().decode(
        RecordBatch(values=[too_big, too_deep, bad_utf8], offsets=[1, 2, 3])
    )
    assert decoded.events == []
    assert [d.reason for d in decoded.dead_letters] == ["not_json", "too_deep", "not_json"]
    with pytest.raises(ValueError) as err:
        json.loads(too_big)
    assert decoded.dead_letters[0].detail == str(err.value)[:200]
