"""Input formats besides JSON: Avro and Protobuf records in the Confluent wire format, decoded with
their writer schema from a Schema Registry into the same dicts a JSON record parses to.

A `RecordFormat` turns a batch of raw Kafka values into events (dicts) and problems (the rows that
are dead letters, with a reason of kldrift.events.DEAD_LETTER_REASONS); kldrift.events then reads
event time, key and features from those dicts exactly as from parsed JSON. Free of Beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from kldrift.formats.framed import Problem
from kldrift.formats.registry import RegistryUnreachable, WriterSchemas
from kldrift.schemas.config import SchemaRegistrySpec

FORMATS = ("json", "avro", "protobuf")


class RecordFormat(Protocol):
    def decode(self, values: Sequence[bytes | None]) -> tuple[list[Any], dict[int, Problem]]:
        """Raw values -> one parsed event (a dict) or None per row, and the problem of each row
        that has none. Raises RegistryUnreachable when a writer schema cannot be fetched now."""
        ...


def record_format(fmt: str, registry: SchemaRegistrySpec | None) -> RecordFormat | None:
    """The decoder for `fmt` (kafka.format, or SlidingKLDivergence's `format`) with writer schemas
    from `registry`; None for JSON (kldrift.events parses JSON itself)."""
    if fmt == "json":
        return None
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if registry is None:
        raise ValueError(f"format {fmt!r} needs a schema registry (its writer schemas)")
    schemas = WriterSchemas(registry)
    if fmt == "avro":
        from kldrift.formats.avro import AvroFormat

        return AvroFormat(schemas)
    from kldrift.formats.protobuf import ProtobufFormat

    return ProtobufFormat(schemas)


__all__ = [
    "FORMATS",
    "Problem",
    "RecordFormat",
    "RegistryUnreachable",
    "WriterSchemas",
    "record_format",
]
