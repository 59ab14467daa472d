"""Avro records in the Confluent wire format -> dicts, with fastavro and the writer schema from the
registry: nested records as dicts, unions with null as the value or None, enums as their symbol
(a category), timestamp-millis/-micros as UTC datetimes (an event time as exact as JSON's)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from fastavro import parse_schema, schemaless_reader

from kldrift.formats.framed import Problem, decode_framed
from kldrift.formats.registry import UnknownSchema, WriterSchemas


def parse_writer_schema(schema: Any, schema_id: int) -> Any:
    """fastavro's parsed form of a registry schema; UnknownSchema if it is not Avro."""
    kind = (getattr(schema, "schema_type", None) or "AVRO").upper()
    if kind != "AVRO":
        raise UnknownSchema(f"schema id {schema_id} is {kind}, not AVRO (kafka.format: avro)")
    try:
        return parse_schema(json.loads(schema.schema_str))
    except Exception as err:  # fastavro's SchemaParseException, KeyError, JSON errors...
        raise UnknownSchema(f"schema id {schema_id} is not a usable Avro schema: {err}") from None


def read_record(payload: memoryview, writer_schema: Any) -> Any:
    """One Avro datum; ValueError when the bytes do not decode with the schema or some are left
    over (another schema's record, or a corrupt one)."""
    buffer = io.BytesIO(payload)
    try:
        record = schemaless_reader(buffer, writer_schema, None)
    except EOFError:
        raise ValueError("the payload ends inside the record") from None
    except Exception as err:  # UnicodeDecodeError, IndexError (a bad union/enum index)...
        raise ValueError(f"{type(err).__name__}: {err}"[:200]) from None
    left = len(payload) - buffer.tell()
    if left:
        raise ValueError(f"{left} byte(s) left over after the record")
    return record


class AvroFormat:
    """Decodes batches of Confluent-framed Avro values (see kldrift.formats.RecordFormat)."""

    def __init__(self, schemas: WriterSchemas) -> None:
        self._schemas = schemas

    def decode(self, values: Sequence[bytes | None]) -> tuple[list[Any], dict[int, Problem]]:
        return decode_framed(values, self._schemas, parse_writer_schema, read_record)
