"""The Confluent wire format: magic byte 0, the writer schema's id (4 bytes, big-endian), then the
payload; a Protobuf payload starts with the indexes of its message type in the schema's file."""

from __future__ import annotations

from typing import Any

MAGIC = 0
HEADER_BYTES = 5


class NotWireFormat(ValueError):
    """A value that is not framed as the Confluent wire format (the detail says why)."""


def split(value: Any) -> tuple[int, memoryview]:
    """(schema id, payload) of a framed value; NotWireFormat otherwise."""
    if value is None:
        raise NotWireFormat("the record has no value (a tombstone)")
    if not isinstance(value, bytes | bytearray):
        raise NotWireFormat(f"a {type(value).__name__}, not bytes")
    if len(value) < HEADER_BYTES:
        raise NotWireFormat(f"{len(value)} bytes, shorter than the 5-byte header")
    if value[0] != MAGIC:
        raise NotWireFormat(f"first byte is {value[0]:#04x}, not the magic byte 0x00")
    return int.from_bytes(value[1:HEADER_BYTES], "big"), memoryview(value)[HEADER_BYTES:]


def read_varint(data: memoryview, at: int) -> tuple[int, int]:
    """A zigzag-encoded varint at `at`: (its value, the offset after it); ValueError when the data
    ends first or it runs past 10 bytes."""
    shift = 0
    raw = 0
    for length in range(10):
        if at + length >= len(data):
            raise ValueError("the message indexes end before the payload")
        byte = data[at + length]
        raw |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), at + length + 1
    raise ValueError("a message index longer than 10 bytes")


def message_indexes(payload: memoryview) -> tuple[list[int], int]:
    """The message type's path in the schema's file ([0] = its first message) and where the
    Protobuf message starts; ValueError when the list is malformed."""
    count, at = read_varint(payload, 0)
    if count == 0:  # the common case, [0], is written as one 0 byte
        return [0], at
    if not 0 < count <= 100:
        raise ValueError(f"{count} message indexes")
    indexes = []
    for _ in range(count):
        index, at = read_varint(payload, at)
        indexes.append(index)
    return indexes, at
