"""Input formats besides JSON: Avro and Protobuf records in the Confluent wire format, decoded with
their writer schema from a Schema Registry into the same dicts a JSON record parses to.

A `RecordFormat` turns a batch of raw Kafka values into events (dicts) and problems (the rows that
are dead letters, with a reason of kldrift.events.DEAD_LETTER_REASONS); kldrift.events then reads
event time, key and features from those dicts exactly as from parsed JSON. Free of Beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from kldrift.formats.registry import RegistryUnreachable, WriterSchemas
from kldrift.schemas.config import KafkaSpec

Problem = tuple[str, str]
"""(reason, detail) of a record that is not an event."""


class RecordFormat(Protocol):
    def decode(self, values: Sequence[bytes | None]) -> tuple[list[Any], dict[int, Problem]]:
        """Raw values -> one parsed event (a dict) or None per row, and the problem of each row
        that has none. Raises RegistryUnreachable when a writer schema cannot be fetched now."""
        ...


def record_format(spec: KafkaSpec) -> RecordFormat | None:
    """The decoder for `spec.format`, None for JSON (kldrift.events parses JSON itself)."""
    if spec.format == "json":
        return None
    assert spec.schema_registry is not None  # the config requires it
    schemas = WriterSchemas(spec.schema_registry)
    if spec.format == "avro":
        from kldrift.formats.avro import AvroFormat

        return AvroFormat(schemas)
    from kldrift.formats.protobuf import ProtobufFormat

    return ProtobufFormat(schemas)


__all__ = ["Problem", "RecordFormat", "RegistryUnreachable", "WriterSchemas", "record_format"]
