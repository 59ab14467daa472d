"""The Avro and Protobuf decoders (kldrift.formats) on bytes built here with fastavro and protobuf
themselves, framed by hand as the Confluent wire format: the dicts they give, and each bad record
kind's reason. Writer schemas come from a table in the test (the registry client is tested end to
end in tests/e2e/test_schema_registry_e2e.py)."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema
from fastavro import parse_schema, schemaless_writer

from kldrift.events import EventDecoder, RecordBatch
from kldrift.formats import wire
from kldrift.formats.avro import AvroFormat
from kldrift.formats.framed import DETAIL_CHARS, decode_framed
from kldrift.formats.protobuf import ProtobufFormat
from kldrift.formats.registry import UnknownSchema, shown_url
from kldrift.schemas.config import PipelineConfig

AVRO = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "model", "type": ["null", "string"], "default": None},
        {"name": "latency_ms", "type": ["null", "double"], "default": None},
        {
            "name": "payload",
            "type": {
                "type": "record",
                "name": "P",
                "fields": [{"name": "country", "type": "string"}],
            },
        },
        {"name": "device", "type": {"type": "enum", "name": "D", "symbols": ["ios", "web"]}},
    ],
}


class _Schemas:
    """Writer schemas by id from a table (what WriterSchemas answers, without a registry)."""

    def __init__(self, table: dict[int, Schema]) -> None:
        self._table = table

    def get(self, schema_id: int, build: Any, fmt: str | None = None) -> Any:
        if schema_id not in self._table:
            raise UnknownSchema(f"schema id {schema_id} is not in the registry")
        return build(self._table[schema_id], schema_id)


def _framed(schema_id: int, payload: bytes) -> bytes:
    return bytes([0]) + schema_id.to_bytes(4, "big") + payload


def _avro_bytes(record: dict) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(AVRO), record)
    return buffer.getvalue()


def test_avro_records_decode_to_the_dicts_their_json_would_parse_to() -> None:
    avro = AvroFormat(_Schemas({7: Schema(json.dumps(AVRO), "AVRO")}))  # type: ignore[arg-type]
    record = {
        "ts": 1_700_000_000_123,
        "model": "m",
        "latency_ms": None,
        "payload": {"country": "DE"},
        "device": "web",
    }
    parsed, problems = avro.decode([_framed(7, _avro_bytes(record))])
    assert problems == {}
    assert parsed == [
        {
            "ts": datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC),
            "model": "m",
            "latency_ms": None,
            "payload": {"country": "DE"},
            "device": "web",
        }
    ]


def test_each_bad_avro_record_has_its_reason() -> None:
    avro = AvroFormat(  # type: ignore[arg-type]
        _Schemas({7: Schema(json.dumps(AVRO), "AVRO"), 8: Schema("syntax = 'proto3';", "PROTOBUF")})
    )
    good = _avro_bytes(
        {"ts": 1, "model": None, "latency_ms": 1.0, "payload": {"country": "x"}, "device": "ios"}
    )
    values = [
        b'{"ts": 1}',
        b"\x00\x00",
        _framed(9, good),
        _framed(8, good),
        _framed(7, good[:-2]),
        _framed(7, good + b"\x00"),
        None,
    ]
    parsed, problems = avro.decode(values)
    assert parsed == [None] * len(values)
    assert [problems[row][0] for row in range(len(values))] == [
        "not_wire_format",
        "not_wire_format",
        "unknown_schema",
        "unknown_schema",
        "undecodable",
        "undecodable",
        "null_value",
    ]


def test_avro_events_take_the_json_path_for_time_and_key() -> None:
    config = PipelineConfig.model_validate(
        {
            "name": "t",
            "event_time_field": "ts",
            "key_field": "model",
            "window": {"size": "1m", "period": "1m"},
            "features": [{"name": "latency_ms", "kind": "numeric", "edges": [0, 10]}],
        }
    )
    avro = AvroFormat(_Schemas({7: Schema(json.dumps(AVRO), "AVRO")}))  # type: ignore[arg-type]
    ok = {
        "ts": 1_700_000_000_000,
        "model": "m",
        "latency_ms": 2.0,
        "payload": {"country": "x"},
        "device": "ios",
    }
    values = [_framed(7, _avro_bytes(ok)), _framed(7, _avro_bytes({**ok, "model": None}))]
    batch = RecordBatch(values, [10, 11], source="events")
    decoded = EventDecoder(config).decode_parsed(batch, *avro.decode(values))
    assert decoded.event_time_us.tolist() == [1_700_000_000_000_000]
    assert decoded.keys == ["m"] and decoded.offsets == [10]
    assert [(d.reason, d.offset, d.value) for d in decoded.dead_letters] == [
        ("missing_key", 11, values[1])
    ]


def _protobuf_schema() -> tuple[Schema, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="u.proto", package="u", syntax="proto3")
    proto.dependency.append("google/protobuf/timestamp.proto")
    other = proto.message_type.add(name="Other")
    other.field.add(name="x", number=1, type=field.TYPE_INT32, label=1)
    event = proto.message_type.add(name="Event")
    event.field.add(
        name="ts",
        number=1,
        type=field.TYPE_MESSAGE,
        label=1,
        type_name=".google.protobuf.Timestamp",
    )
    event.field.add(name="n", number=2, type=field.TYPE_INT64, label=1)
    event.field.add(name="device", number=3, type=field.TYPE_ENUM, label=1, type_name=".u.Event.D")
    event.field.add(name="tags", number=4, type=field.TYPE_STRING, label=3)
    enum = event.enum_type.add(name="D")
    enum.value.add(name="ios", number=0)
    enum.value.add(name="web", number=1)
    schema = Schema(base64.b64encode(proto.SerializeToString()).decode(), "PROTOBUF")
    from google.protobuf import timestamp_pb2  # noqa: F401

    pool = descriptor_pool.DescriptorPool()
    pool.Add(
        descriptor_pb2.FileDescriptorProto.FromString(
            descriptor_pool.Default()
            .FindFileByName("google/protobuf/timestamp.proto")
            .serialized_pb
        )
    )
    pool.Add(proto)
    return schema, message_factory.GetMessageClass(pool.FindMessageTypeByName("u.Event"))


def test_protobuf_messages_decode_with_every_field_and_the_message_index() -> None:
    schema, event_class = _protobuf_schema()
    formats = ProtobufFormat(_Schemas({3: schema}))  # type: ignore[arg-type]
    message = event_class(n=0, device=1, tags=["a", "b"])
    message.ts.seconds, message.ts.nanos = 1_700_000_000, 5_000
    # Message index [1] (the second message of the file): count 1, then 1, zigzag-encoded.
    value = _framed(3, bytes([2, 2]) + message.SerializeToString())
    parsed, problems = formats.decode([value, _framed(3, bytes([2, 2]) + b"\x0a\x05ab")])
    assert parsed[0] == {
        "ts": datetime(2023, 11, 14, 22, 13, 20, 5, tzinfo=UTC),
        "n": 0,  # a proto3 default: on the wire as nothing, read as 0
        "device": "web",
        "tags": ["a", "b"],
    }
    assert problems[1][0] == "undecodable"


def test_message_indexes_are_zigzag_varints_and_zero_means_the_first() -> None:
    assert wire.message_indexes(memoryview(b"\x00rest")) == ([0], 1)
    assert wire.message_indexes(memoryview(bytes([4, 2, 6]))) == ([1, 3], 3)
    with pytest.raises(ValueError):
        wire.message_indexes(memoryview(bytes([4, 2])))


def test_the_registry_url_is_shown_without_its_user_info() -> None:
    assert shown_url("https://u:secret@reg.example:8081/apis/ccompat/v7") == (
        "https://reg.example:8081/apis/ccompat/v7"
    )


def test_proto_text_that_does_not_compile_is_an_unknown_schema_naming_protocs_error() -> None:
    formats = ProtobufFormat(  # type: ignore[arg-type]
        _Schemas(
            {
                4: Schema('syntax = "proto3";\nmessage E {\n  Missing m = 1;\n}\n', "PROTOBUF"),
                5: Schema('syntax = "proto3";\nimport "other.proto";\nmessage E {}\n', "PROTOBUF"),
            }
        )
    )
    _, problems = formats.decode([_framed(4, b"\x00"), _framed(5, b"\x00")])
    assert problems[0][0] == problems[1][0] == "unknown_schema"
    assert 'line 3: "Missing" is not defined' in problems[0][1]
    assert "other.proto: File not found" in problems[1][1]


def test_every_format_cuts_an_undecodable_detail_to_the_same_length() -> None:
    schemas = _Schemas({5: Schema("{}", "AVRO")})

    def decode(payload: memoryview, writer: Any) -> Any:
        raise ValueError("x" * 500)

    parsed, problems = decode_framed([_framed(5, b"\x01")], schemas, lambda s, i: s, decode)  # type: ignore[arg-type]
    assert parsed == [None]
    reason, detail = problems[0]
    assert reason == "undecodable"
    assert detail.startswith("schema id 5: xxx")
    assert len(detail) == DETAIL_CHARS == 200
