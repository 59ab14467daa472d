"""Protobuf messages in the Confluent wire format -> dicts, with message classes built at run time
(protobuf's descriptor pool and message factory) from the registry's serialized file descriptor or
from the `.proto` text it serves (compiled by protoc, kldrift.formats.proto_text): no compiled
classes. Every field of the writer's message is in the dict (proto3 defaults included,
as a reader of that message sees them; unset optional and message fields as None), enums as their
names (categories), google.protobuf.Timestamp as a UTC datetime, wrapper types (DoubleValue...) as
their value."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from kldrift.formats import wire
from kldrift.formats.framed import Problem, decode_framed
from kldrift.formats.registry import UnknownSchema, WriterSchemas

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TIMESTAMP = "google.protobuf.Timestamp"
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
"""Wrapper messages: read as their value (null when unset), as protobuf's JSON mapping has them."""


class _WriterFile:
    """A registry schema's file: its message classes by index path, built on first use."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self._classes: dict[tuple[int, ...], Any] = {}

    def message_class(self, indexes: list[int]) -> Any:
        key = tuple(indexes)
        found = self._classes.get(key)
        if found is None:
            from google.protobuf import message_factory

            types = self._file.message_types_by_name
            descriptor: Any = None
            for index in indexes:
                choices = list(types.values()) if descriptor is None else descriptor.nested_types
                if not 0 <= index < len(choices):
                    raise ValueError(f"message index path {indexes} is not in the schema")
                descriptor = choices[index]
            found = self._classes[key] = message_factory.GetMessageClass(descriptor)
        return found


def build_writer_file(schema: Any, schema_id: int) -> _WriterFile:
    """The file a registry schema describes, in a pool of its own with the files it imports. The
    registry is asked for the `serialized` format (a base64 FileDescriptorProto), which Confluent's
    serves; registries that serve the `.proto` text a producer registered (Apicurio, Redpanda,
    Karapace) give text, which protoc compiles (kldrift.formats.proto_text)."""
    from google.protobuf import descriptor_pool

    kind = (getattr(schema, "schema_type", None) or "").upper()
    if kind != "PROTOBUF":
        raise UnknownSchema(f"schema id {schema_id} is {kind}, not PROTOBUF (kafka.format)")
    files = _serialized_files(schema.schema_str, schema_id)
    if files is None:
        from kldrift.formats.proto_text import compile_proto_text

        files = compile_proto_text(schema.schema_str, schema_id)
    pool = descriptor_pool.DescriptorPool()
    try:
        for file in files[:-1]:
            pool.Add(file)
        return _WriterFile(pool.Add(files[-1]))
    except Exception as err:  # TypeError/KeyError from the pool: an inconsistent descriptor
        raise UnknownSchema(f"schema id {schema_id} is not a usable descriptor: {err}") from None


def _serialized_files(schema_str: str, schema_id: int) -> list[Any] | None:
    """A serialized FileDescriptorProto (base64) and the well-known types it imports, imports
    first; None when `schema_str` is not base64 (.proto text)."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    _load_well_known_types()

    try:
        raw = base64.b64decode(schema_str, validate=True)
    except (binascii.Error, ValueError):
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    try:
        proto.ParseFromString(raw)
    except Exception:  # DecodeError: base64, but not a descriptor
        raise UnknownSchema(
            f"schema id {schema_id} is neither a serialized file descriptor nor .proto text"
        ) from None
    files = []
    default = descriptor_pool.Default()
    for dependency in proto.dependency:
        try:
            found = default.FindFileByName(dependency)
        except KeyError:
            raise UnknownSchema(
                f"schema id {schema_id} imports {dependency}, which kldrift cannot resolve "
                "(schema references are not supported; well-known types are)"
            ) from None
        imported = descriptor_pb2.FileDescriptorProto()
        found.CopyToProto(imported)
        files.append(imported)
    return [*files, proto]


def _load_well_known_types() -> None:
    """Puts the well-known types a serialized descriptor may import in the default pool."""
    from google.protobuf import (  # noqa: F401
        any_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )


def message_dict(message: Any) -> dict[str, Any]:
    """A message's fields by name, as a JSON object would carry them (see the module docstring)."""
    event: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            values = getattr(message, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                event[field.name] = {k: _value(value_field, v) for k, v in values.items()}
            else:
                event[field.name] = [_value(field, v) for v in values]
        elif field.has_presence and not message.HasField(field.name):
            event[field.name] = None
        else:
            event[field.name] = _value(field, getattr(message, field.name))
    return event


def _value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name == _TIMESTAMP:
            return EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)
        if field.message_type.full_name in _WRAPPERS:
            return value.value
        return message_dict(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return value if known is None else known.name
    return value


class ProtobufFormat:
    """Decodes batches of Confluent-framed Protobuf values (see kldrift.formats.RecordFormat)."""

    def __init__(self, schemas: WriterSchemas) -> None:
        self._schemas = schemas

    def decode(self, values: Sequence[bytes | None]) -> tuple[list[Any], dict[int, Problem]]:
        return decode_framed(
            values, self._schemas, build_writer_file, read_message, fmt="serialized"
        )


def read_message(payload: memoryview, writer: _WriterFile) -> dict[str, Any]:
    """One Protobuf message (its message indexes first) as a dict; an exception when the bytes are
    not a message of the writer's file (DecodeError, a bad index path, a malformed index list)."""
    indexes, start = wire.message_indexes(payload)
    message = writer.message_class(indexes)()
    message.ParseFromString(bytes(payload[start:]))
    return message_dict(message)
