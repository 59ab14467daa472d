"""HistogramCoder and KeyBlockCoder: how a Histogram, or a KeyBlock of many keys' counts (or None),
crosses the runner, exactly and without pickle.

`KeyBlockHint` is the type hint kldrift's count-carrying steps declare (`HistogramHint` that of
single histograms, e.g. the baseline job's); Beam's coder registry maps each (and only it, a
kldrift-private type) to its coder.
"""

from __future__ import annotations

import struct
import sys
from collections import Counter
from typing import Any

import numpy as np
from apache_beam import coders
from apache_beam.coders import coder_impl
from apache_beam.coders.coders import FastCoder

from kldrift.key_blocks import KeyBlock
from kldrift.other_values import CountsWithOthers

_NONE = b"\x00"
_ARRAY = 1
_WITH_OTHERS = 2
_KEY_BLOCK = 3
_ARRAY_TAG = bytes((_ARRAY,))
_WITH_OTHERS_TAG = bytes((_WITH_OTHERS,))
_COUNT = struct.Struct("<I")
_INT64 = struct.Struct("<q")
_WIRE_INT64 = np.dtype("<i8")
_LITTLE_ENDIAN = sys.byteorder == "little"


class _HistogramHintMeta(type):
    # isinstance/issubclass answer for what the hint stands for, so Beam's construction-time and
    # runtime type checks accept int64 arrays, CountsWithOthers and None.
    def __instancecheck__(cls, value: object) -> bool:
        return value is None or isinstance(value, np.ndarray | CountsWithOthers)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return subclass is cls or issubclass(subclass, np.ndarray | CountsWithOthers | type(None))


class HistogramHint(metaclass=_HistogramHintMeta):
    """Type hint: a Histogram (1-D int64 array or CountsWithOthers) or None; never instantiated."""


class HistogramCoder(FastCoder):
    """A Histogram or None, exactly: int64 counts as their 8-byte little-endian values, the raw
    `__other__` values in their insertion order. Anything else (another dtype or shape, another
    type) is refused with a TypeError/ValueError, never pickled.

    Encoding (the value's bytes; Beam adds a length prefix where it nests them):
      0x00                                       None
      0x01  counts                               int64 array
      0x02  n  counts  features [name  values [text  count]]   CountsWithOthers
    where counts is the array's values as little-endian int64, n and list lengths are little-endian
    uint32, texts are uint32 length + UTF-8 (surrogates passed through), a count is int64.
    """

    def _create_impl(self) -> coder_impl.CoderImpl:
        return _HistogramCoderImpl()

    def is_deterministic(self) -> bool:
        # Equal CountsWithOthers whose `others` differ only in order encode differently (the
        # order is kept on purpose): not fit to be a grouping key, and never used as one.
        return False

    def to_type_hint(self) -> type:
        return HistogramHint

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class _HistogramCoderImpl(coder_impl.StreamCoderImpl):
    def encode_to_stream(self, value: Any, out: Any, nested: bool) -> None:
        out.write(encode_histogram(value), nested)

    def decode_from_stream(self, in_stream: Any, nested: bool) -> Any:
        return decode_histogram(in_stream.read_all(nested))

    def estimate_size(self, value: Any, nested: bool = False) -> int:
        if type(value) is np.ndarray:
            size = 1 + value.nbytes
            return size + (_varint_size(size) if nested else 0)
        return super().estimate_size(value, nested)


def encode_histogram(value: Any) -> bytes:
    """The bytes of a Histogram or None (see HistogramCoder); refuses anything else."""
    if value is None:
        return _NONE
    if type(value) is np.ndarray:
        return _ARRAY_TAG + _counts_bytes(value, "counts")
    if type(value) is CountsWithOthers:
        counts = _counts_bytes(value.counts, "CountsWithOthers.counts")
        parts = [_WITH_OTHERS_TAG, _COUNT.pack(len(counts) // 8), counts]
        _others_bytes(value.others, parts)
        return b"".join(parts)
    raise TypeError(
        f"HistogramCoder encodes an int64 array, a CountsWithOthers or None, not a "
        f"{type(value).__module__}.{type(value).__qualname__}"
    )


def decode_histogram(data: bytes) -> Any:
    """The Histogram or None `encode_histogram` made of `data`."""
    if not data:
        raise ValueError("HistogramCoder: no bytes to decode")
    tag = data[0]
    if tag == 0 and len(data) == 1:
        return None
    if tag == _ARRAY:
        return _counts_from(data, 1, len(data))
    if tag == _WITH_OTHERS:
        (n,) = _COUNT.unpack_from(data, 1)
        end = 5 + 8 * n
        counts = _counts_from(data, 5, end)
        others, end = _others_from(data, end)
        if end != len(data):
            raise ValueError(f"HistogramCoder: {len(data) - end} bytes left after a histogram")
        return CountsWithOthers(counts, others)
    raise ValueError(f"HistogramCoder: not a histogram encoding (tag {tag}, {len(data)} bytes)")


def _counts_bytes(counts: Any, what: str) -> bytes:
    if type(counts) is not np.ndarray or counts.dtype != np.int64 or counts.ndim != 1:
        described = (
            f"an array of dtype {counts.dtype}, shape {counts.shape}"
            if isinstance(counts, np.ndarray)
            else f"a {type(counts).__qualname__}"
        )
        raise TypeError(f"HistogramCoder: {what} must be a 1-D int64 array, not {described}")
    if _LITTLE_ENDIAN and counts.dtype.isnative:
        return counts.tobytes()
    return counts.astype(_WIRE_INT64).tobytes()


def _counts_from(data: bytes, start: int, end: int) -> np.ndarray:
    if (end - start) % 8 or end > len(data):
        raise ValueError(f"HistogramCoder: {end - start} bytes of counts do not fit {len(data)}")
    # A writeable copy in native order: SumCounts adds into its accumulators in place.
    return np.frombuffer(data, _WIRE_INT64, (end - start) // 8, start).astype(np.int64)


def _others_bytes(others: Any, parts: list[bytes]) -> None:
    if type(others) is not dict:
        raise TypeError(
            f"HistogramCoder: CountsWithOthers.others must be a dict, not a {type(others).__name__}"
        )
    parts.append(_COUNT.pack(len(others)))
    for feature, values in others.items():
        if type(values) is not Counter:
            raise TypeError(
                f"HistogramCoder: other values of feature {feature!r} must be a Counter, "
                f"not a {type(values).__name__}"
            )
        parts.append(_text_bytes(feature, "a feature name"))
        parts.append(_COUNT.pack(len(values)))
        for text, count in values.items():
            parts.append(_text_bytes(text, f"an other value of feature {feature!r}"))
            if type(count) is not int:
                raise TypeError(
                    f"HistogramCoder: the count of {text!r} (feature {feature!r}) must be an int, "
                    f"not a {type(count).__name__}"
                )
            try:
                parts.append(_INT64.pack(count))
            except struct.error:
                raise ValueError(
                    f"HistogramCoder: the count of {text!r} (feature {feature!r}) is outside "
                    f"int64: {count}"
                ) from None


def _text_bytes(text: Any, what: str) -> bytes:
    if type(text) is not str:
        raise TypeError(f"HistogramCoder: {what} must be a str, not a {type(text).__name__}")
    encoded = text.encode("utf-8", "surrogatepass")
    return _COUNT.pack(len(encoded)) + encoded


def _others_from(data: bytes, at: int) -> tuple[dict[str, Counter[str]], int]:
    (n_features,) = _COUNT.unpack_from(data, at)
    at += 4
    others: dict[str, Counter[str]] = {}
    for _ in range(n_features):
        feature, at = _text_from(data, at)
        (n_values,) = _COUNT.unpack_from(data, at)
        at += 4
        values: Counter[str] = Counter()
        for _ in range(n_values):
            text, at = _text_from(data, at)
            (values[text],) = _INT64.unpack_from(data, at)
            at += 8
        others[feature] = values
    return others, at


def _text_from(data: bytes, at: int) -> tuple[str, int]:
    (size,) = _COUNT.unpack_from(data, at)
    start = at + 4
    end = start + size
    if end > len(data):
        raise ValueError("HistogramCoder: a text runs past the end of the histogram's bytes")
    return data[start:end].decode("utf-8", "surrogatepass"), end


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


coders.registry.register_coder(HistogramHint, HistogramCoder)


class _KeyBlockHintMeta(type):
    def __instancecheck__(cls, value: object) -> bool:
        return value is None or isinstance(value, KeyBlock)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return subclass is cls or issubclass(subclass, KeyBlock | type(None))


class KeyBlockHint(metaclass=_KeyBlockHintMeta):
    """Type hint: a kldrift.key_blocks.KeyBlock or None; never instantiated."""


class KeyBlockCoder(FastCoder):
    """A KeyBlock or None, exactly, without pickle (as HistogramCoder, whose pieces it uses).

    Encoding:
      0x00                                                      None
      0x03  rows  slots  keys[key]  counts  n [row  features [name  values [text  count]]]
    where rows, slots, n and row are little-endian uint32, a key is 0xFFFFFFFF (None) or a text,
    counts the rows x slots matrix as little-endian int64 in row order, and the n keys with raw
    `__other__` values are named by their row.
    """

    def _create_impl(self) -> coder_impl.CoderImpl:
        return _KeyBlockCoderImpl()

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return KeyBlockHint

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class _KeyBlockCoderImpl(coder_impl.StreamCoderImpl):
    def encode_to_stream(self, value: Any, out: Any, nested: bool) -> None:
        out.write(encode_key_block(value), nested)

    def decode_from_stream(self, in_stream: Any, nested: bool) -> Any:
        return decode_key_block(in_stream.read_all(nested))


_KEY_BLOCK_TAG = bytes((_KEY_BLOCK,))
_NO_KEY = _COUNT.pack(0xFFFFFFFF)


def encode_key_block(value: Any) -> bytes:
    """The bytes of a KeyBlock or None (see KeyBlockCoder); refuses anything else."""
    if value is None:
        return _NONE
    if type(value) is not KeyBlock:
        raise TypeError(
            f"KeyBlockCoder encodes a KeyBlock or None, not a "
            f"{type(value).__module__}.{type(value).__qualname__}"
        )
    counts = value.counts
    if type(counts) is not np.ndarray or counts.dtype != np.int64 or counts.ndim != 2:
        raise TypeError(f"KeyBlockCoder: counts must be a 2-D int64 array, not {counts!r:.80}")
    if counts.shape[0] != len(value.keys):
        raise ValueError(f"KeyBlockCoder: {counts.shape[0]} rows for {len(value.keys)} keys")
    parts = [_KEY_BLOCK_TAG, _COUNT.pack(counts.shape[0]), _COUNT.pack(counts.shape[1])]
    for key in value.keys:
        parts.append(_NO_KEY if key is None else _text_bytes(key, "a key"))
    if _LITTLE_ENDIAN and counts.dtype.isnative:
        parts.append(np.ascontiguousarray(counts).tobytes())
    else:
        parts.append(counts.astype(_WIRE_INT64).tobytes())
    row_of = {key: row for row, key in enumerate(value.keys)}
    parts.append(_COUNT.pack(len(value.others)))
    for key, others in value.others.items():
        parts.append(_COUNT.pack(row_of[key]))
        _others_bytes(others, parts)
    return b"".join(parts)


def decode_key_block(data: bytes) -> Any:
    """The KeyBlock or None `encode_key_block` made of `data`."""
    if data == _NONE:
        return None
    if not data or data[0] != _KEY_BLOCK:
        raise ValueError(f"KeyBlockCoder: not a key block encoding ({len(data)} bytes)")
    n_rows, n_slots = _COUNT.unpack_from(data, 1)[0], _COUNT.unpack_from(data, 5)[0]
    at = 9
    keys: list[str | None] = []
    for _ in range(n_rows):
        if data[at : at + 4] == _NO_KEY:
            keys.append(None)
            at += 4
        else:
            key, at = _text_from(data, at)
            keys.append(key)
    end = at + 8 * n_rows * n_slots
    if end > len(data):
        raise ValueError("KeyBlockCoder: the counts run past the end of the block's bytes")
    counts = np.frombuffer(data, _WIRE_INT64, n_rows * n_slots, at).astype(np.int64)
    (n_others,) = _COUNT.unpack_from(data, end)
    at = end + 4
    others: dict[str | None, Any] = {}
    for _ in range(n_others):
        (row,) = _COUNT.unpack_from(data, at)
        others[keys[row]], at = _others_from(data, at + 4)
    if at != len(data):
        raise ValueError(f"KeyBlockCoder: {len(data) - at} bytes left after a block")
    return KeyBlock(keys, counts.reshape(n_rows, n_slots), others)


coders.registry.register_coder(KeyBlockHint, KeyBlockCoder)
