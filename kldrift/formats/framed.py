"""The loop every registry format shares: Confluent-framed values -> parsed events and the problem
of each row that is not one (null_value, not_wire_format, unknown_schema, undecodable), with only
the writer-schema loader and the payload decoder differing per format."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kldrift.formats import wire
from kldrift.formats.registry import UnknownSchema, WriterSchemas

Problem = tuple[str, str]
"""(reason, detail) of a record that is not an event."""

DETAIL_CHARS = 200
"""An undecodable record's detail is cut here: the dead letter keeps the raw bytes anyway."""


def decode_framed(
    values: Sequence[bytes | None],
    schemas: WriterSchemas,
    load: Callable[[Any, int], Any],
    decode: Callable[[memoryview, Any], Any],
    fmt: str | None = None,
) -> tuple[list[Any], dict[int, Problem]]:
    """One parsed event (or None) per value, and the problem of each row without one.

    `load(schema, id)` builds a writer schema once per id (cached by `schemas`; UnknownSchema if it
    is not of this format), `decode(payload, built)` reads one payload with it (any exception is
    the row's `undecodable` detail). RegistryUnreachable propagates: the batch is read again later.
    """
    parsed: list[Any] = [None] * len(values)
    problems: dict[int, Problem] = {}
    for row, value in enumerate(values):
        if value is None:
            problems[row] = ("null_value", "the record has no value (a tombstone)")
            continue
        try:
            schema_id, payload = wire.split(value)
        except wire.NotWireFormat as err:
            problems[row] = ("not_wire_format", str(err))
            continue
        try:
            writer = schemas.get(schema_id, load, fmt=fmt)
        except UnknownSchema as err:
            problems[row] = ("unknown_schema", str(err))
            continue
        try:
            parsed[row] = decode(payload, writer)
        except Exception as err:  # the format's own decode errors: a corrupt or foreign record
            problems[row] = ("undecodable", f"schema id {schema_id}: {err}"[:DETAIL_CHARS])
    return parsed, problems
