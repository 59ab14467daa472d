"""End to end with a real Schema Registry (Apicurio, kldrift's local one) and a real broker:
Avro and Protobuf events written by confluent-kafka's registry-aware serializers are read by
`kldrift run` (Prism), whose reports equal `kldrift replay` over the same events written as JSON;
a writer schema change mid-stream is read without a restart and each bad record kind is
dead-lettered with its reason."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    ReportTail,
    job_kafka,
    latency_job,
    run_cli,
    streaming_job,
    trained_job,
    wait_for,
    window_starts,
)
from kafka import KafkaConsumer, KafkaProducer

from kldrift.consumer import LatestRevisions
from kldrift.schemas.report import DriftReport
from kldrift.synthetic import SyntheticStream

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 20, 10, 10
PARTITIONS = 2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _avro_schema(*, session: bool = False, amount: bool = True) -> str:
    """The synthetic events as an Avro record; `session` adds an optional field (the evolved
    writer schema), `amount=False` drops a configured feature."""
    fields: list[dict[str, Any]] = [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "model", "type": "string"},
        {"name": "latency_ms", "type": ["null", "double"], "default": None},
        {
            "name": "payload",
            "type": {
                "type": "record",
                "name": "Payload",
                "fields": [{"name": "country", "type": ["null", "string"], "default": None}],
            },
        },
        {
            "name": "device",
            "type": {"type": "enum", "name": "Device", "symbols": ["ios", "android", "web"]},
        },
    ]
    if amount:
        fields.insert(3, {"name": "amount", "type": ["null", "double"], "default": None})
    if session:
        fields.append({"name": "session", "type": ["null", "string"], "default": None})
    return json.dumps({"type": "record", "name": "Event", "namespace": "shop", "fields": fields})


def _micros(event: dict) -> int:
    return round(event["ts"] * 1_000_000)


def _as_json(event: dict, micros: int) -> bytes:
    """The event as a JSON line with the same event time, exactly (RFC 3339 to the microsecond)."""
    moment = EPOCH + timedelta(microseconds=micros)
    return json.dumps({**event, "ts": moment.isoformat().replace("+00:00", "Z")}).encode()


def _past_stream(duration_s: int, rate: float, seed: int) -> tuple[SyntheticStream, list[dict]]:
    """Events that ended a few seconds ago, drifting half way: the job reads them as a backlog,
    and its idle rule closes every window once it has read them."""
    t0 = math.floor((time.time() - duration_s - 15) / PERIOD_S) * PERIOD_S
    stream = SyntheticStream(
        start=t0, duration=duration_s, rate=rate, drift_at=t0 + duration_s / 2, seed=seed
    )
    return stream, list(stream.events())


def _job(tmp_path: Path, bootstrap: str, registry: str, fmt: str) -> tuple[Path, dict]:
    kafka = job_kafka(
        bootstrap,
        f"sr-{fmt}",
        uuid.uuid4().hex[:8],
        start_from="earliest",
        idle_timeout="3s",
        max_delay="1s",
        format=fmt,
    )
    kafka["schema_registry"] = {"url": registry}  # type: ignore[assignment]
    config = trained_job(
        tmp_path,
        f"sr-{fmt}",
        kafka,
        SIZE_S,
        PERIOD_S,
        LATENESS_S,
        training_events=5000,
        partitions=PARTITIONS,
    )
    return config, kafka


def _run_and_collect(
    config: Path, kafka: dict, bootstrap: str, last_event_s: float
) -> tuple[list[DriftReport], Counter]:
    """`kldrift run` until the window of the last event is reported; its reports and its dead
    letters' reasons."""
    tail = ReportTail(bootstrap, kafka["output_topic"])
    last_window = window_starts(last_event_s, SIZE_S, PERIOD_S)[0]
    with streaming_job("--config", str(config)) as job:
        try:
            wait_for(lambda: tail.has(last_window), 120, "the last window's report")
            time.sleep(2)
            tail.drain()
        finally:
            tail.close()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-4000:]
    dead = KafkaConsumer(
        kafka["dead_letter_topic"],
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    reasons = Counter(dict(m.headers)["reason"].decode() for m in dead)
    dead.close()
    return tail.reports, reasons


def _assert_equals_replay(
    config: Path, tmp_path: Path, reports: list[DriftReport], json_lines: list[bytes]
) -> None:
    """The job's final revisions equal `kldrift replay` over the same events as JSON: every field
    of every report but the revision."""
    events_file = tmp_path / "as-json.jsonl"
    events_file.write_bytes(b"\n".join(json_lines) + b"\n")
    replay_out = tmp_path / "replay.jsonl"
    replayed = run_cli(
        "replay", "--config", str(config), "--input", str(events_file), "--output", str(replay_out)
    )
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    expected = [
        DriftReport.from_json_bytes(line) for line in replay_out.read_bytes().splitlines() if line
    ]
    latest = LatestRevisions()
    for report in reports:
        latest.offer(report)
    assert len(expected) == len(latest.by_key) > 0
    for want in expected:
        got = latest.by_key[want.message_key]
        assert got.model_dump(exclude={"revision"}) == want.model_dump(exclude={"revision"})


def test_avro_with_schema_evolution_and_bad_records_matches_replay_of_the_json(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str
) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    config, kafka = _job(tmp_path, kafka_bootstrap, schema_registry, "avro")
    topic = kafka["input_topic"]
    stream, events = _past_stream(duration_s=40, rate=15, seed=3)
    client = SchemaRegistryClient({"url": schema_registry})
    context = SerializationContext(topic, MessageField.VALUE)
    v1 = AvroSerializer(client, _avro_schema())
    v2 = AvroSerializer(client, _avro_schema(session=True))
    no_amount = AvroSerializer(client, _avro_schema(amount=False))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    json_lines: list[bytes] = []
    framed: list[bytes] = []
    ids: list[int] = []
    # The first half with schema v1; the second with v2 (a new optional field: a new schema id),
    # its last 20 events with a schema that lacks the feature `amount` (missing, as in JSON).
    for i, event in enumerate(events):
        micros = _micros(event)
        record = {**event, "ts": micros}
        if i < len(events) // 2:
            value = v1(record, context)
            copy = event
        elif i < len(events) - 20:
            value = v2({**record, "session": f"s{i % 7}"}, context)
            copy = {**event, "session": f"s{i % 7}"}
        else:
            del record["amount"]
            value = no_amount(record, context)
            copy = {k: v for k, v in event.items() if k != "amount"}
        assert value is not None
        framed.append(value)
        ids.append(int.from_bytes(value[1:5], "big"))
        json_lines.append(_as_json(copy, micros))
        producer.send(topic, value=value, partition=i % PARTITIONS)
    assert len(set(ids)) == 3, "each writer schema has an id of its own"
    bad = [
        json.dumps(events[0]).encode(),  # JSON on an Avro topic: not_wire_format
        b"\x00\x00\x0f\x42\x40" + framed[0][5:],  # id 1000000: unknown_schema
        framed[1][:-4],  # truncated: undecodable
        framed[2] + b"\x02",  # a byte left over: undecodable
        None,  # a tombstone: null_value
    ]
    for value in bad:
        producer.send(topic, key=b"k", value=value, partition=0)
    producer.flush()
    producer.close()

    reports, reasons = _run_and_collect(
        config, kafka, kafka_bootstrap, float(stream.event_times()[-1])
    )
    print(f"dead letters by reason (avro): {dict(reasons)}")
    assert reasons == Counter(
        {"not_wire_format": 1, "unknown_schema": 1, "undecodable": 2, "null_value": 1}
    )
    missing_amount = [r for r in reports if r.feature == "amount" and r.missing and r.revision == 0]
    assert missing_amount, "the events of the schema without `amount` count as missing"
    _assert_equals_replay(config, tmp_path, reports, json_lines)


def _event_message_class(name: str) -> Any:
    """A Protobuf message class for the synthetic events, built at run time (as a producer with
    compiled classes would have it): ts a google.protobuf.Timestamp, device an enum."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import timestamp_pb2 as _timestamp  # noqa: F401

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    proto.dependency.append("google/protobuf/timestamp.proto")
    event = proto.message_type.add(name="Event")
    for number, (fname, kind, type_name) in enumerate(
        [
            ("ts", field.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
            ("model", field.TYPE_STRING, ""),
            ("latency_ms", field.TYPE_DOUBLE, ""),
            ("amount", field.TYPE_DOUBLE, ""),
            ("payload", field.TYPE_MESSAGE, f".{name}.Event.Payload"),
            ("device", field.TYPE_ENUM, f".{name}.Event.Device"),
        ],
        start=1,
    ):
        added = event.field.add(name=fname, number=number, type=kind, label=field.LABEL_OPTIONAL)
        if type_name:
            added.type_name = type_name
    payload = event.nested_type.add(name="Payload")
    payload.field.add(name="country", number=1, type=field.TYPE_STRING, label=1)
    device = event.enum_type.add(name="Device")
    for number, symbol in enumerate(["ios", "android", "web"]):
        device.value.add(name=symbol, number=number)
    descriptor_pool.Default().Add(proto)
    found = descriptor_pool.Default().FindMessageTypeByName(f"{name}.Event")
    return message_factory.GetMessageClass(found)


def test_protobuf_events_match_replay_of_the_json(
    tmp_path: Path, kafka_bootstrap: str, schema_registry: str
) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    config, kafka = _job(tmp_path, kafka_bootstrap, schema_registry, "protobuf")
    topic = kafka["input_topic"]
    stream, events = _past_stream(duration_s=20, rate=10, seed=4)
    event_class = _event_message_class(f"sr{uuid.uuid4().hex[:8]}")
    serialize = ProtobufSerializer(
        event_class,
        SchemaRegistryClient({"url": schema_registry}),
        {"use.deprecated.format": False},
    )
    context = SerializationContext(topic, MessageField.VALUE)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    json_lines: list[bytes] = []
    framed: list[bytes] = []
    for i, event in enumerate(events):
        micros = _micros(event)
        message = event_class(
            model=event["model"],
            latency_ms=event["latency_ms"],
            amount=event["amount"],
            device=event["device"],
        )
        message.ts.seconds, message.ts.nanos = divmod(micros, 1_000_000)
        message.ts.nanos *= 1000
        message.payload.country = event["payload"]["country"]
        value = serialize(message, context)
        assert value is not None
        framed.append(value)
        json_lines.append(_as_json(event, micros))
        producer.send(topic, value=value, partition=i % PARTITIONS)
    for value in (b"plain text", framed[0][:-3]):  # not_wire_format, undecodable (truncated)
        producer.send(topic, value=value, partition=1)
    producer.flush()
    producer.close()

    reports, reasons = _run_and_collect(
        config, kafka, kafka_bootstrap, float(stream.event_times()[-1])
    )
    print(f"dead letters by reason (protobuf): {dict(reasons)}")
    assert reasons == Counter({"not_wire_format": 1, "undecodable": 1})
    _assert_equals_replay(config, tmp_path, reports, json_lines)


# --- Protobuf schemas registered as .proto text (decoder + real registry, no job) -------------

_PROTO_TEXT = """
syntax = "proto3";
package {package};

import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Ignored {{ int32 x = 1; }}

message Event {{
  enum Device {{ DEVICE_UNSPECIFIED = 0; IOS = 1; WEB = 2; }}
  message Payload {{
    string country = 1;
    map<string, int64> counts = 2;
  }}
  google.protobuf.Timestamp ts = 1;
  string model = 2;
  optional double latency_ms = 3;
  Payload payload = 4;
  Device device = 5;
  oneof amount_kind {{
    double amount = 6;
    string amount_text = 7;
  }}
  google.protobuf.DoubleValue score = 8;
  repeated string tags = 9;
}}
"""


def _register(registry: str, subject: str, schema: str, schema_type: str) -> int:
    """Registers `schema` under `subject` through the Confluent-compatible REST API, as a Java
    producer's serializer does; its global id."""
    import urllib.request

    request = urllib.request.Request(
        f"{registry}/subjects/{subject}/versions",
        data=json.dumps({"schema": schema, "schemaType": schema_type}).encode(),
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(json.load(answer)["id"])


def _compiled_module(tmp_path: Path, text: str) -> Any:
    """The `_pb2` module `protoc --python_out` generates from `text` (a Java or Python shop's
    build step), imported."""
    import importlib.util
    import subprocess
    import sys

    (tmp_path / "event.proto").write_text(text)
    protoc = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{tmp_path}",
        f"--python_out={tmp_path}",
    ]
    done = subprocess.run(
        [*protoc, str(tmp_path / "event.proto")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    spec = importlib.util.spec_from_file_location("event_pb2", tmp_path / "event_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_protobuf_schemas_registered_as_proto_text_decode_to_the_messages_dicts(
    tmp_path: Path, schema_registry: str
) -> None:
    """Apicurio serves the .proto text a producer registered (not the serialized descriptor
    Confluent's registry serves): kldrift compiles it and reads every field of the message."""
    from kldrift.formats import WriterSchemas
    from kldrift.formats.protobuf import ProtobufFormat
    from kldrift.schemas.config import SchemaRegistrySpec

    package = f"shop{uuid.uuid4().hex[:8]}"
    text = _PROTO_TEXT.format(package=package)
    schema_id = _register(schema_registry, f"{package}-value", text, "PROTOBUF")
    event_pb2 = _compiled_module(tmp_path, text)
    full = event_pb2.Event(
        model="m-1",
        latency_ms=0.0,  # set, though a default: present
        device=event_pb2.Event.WEB,
        amount_text="12.5",
        tags=["a", "b"],
    )
    full.ts.FromMicroseconds(1_700_000_000_123_456)
    full.payload.country = "DE"
    full.payload.counts["x"] = 3
    full.score.value = 0.25
    empty = event_pb2.Event()
    framed = [
        # Message index [1] (Event, the file's second message): count 1, then 1, zigzag varints.
        _framed(schema_id, bytes([2, 2]) + full.SerializeToString()),
        _framed(schema_id, bytes([2, 2]) + empty.SerializeToString()),
        _framed(schema_id, b"\x00" + event_pb2.Ignored(x=7).SerializeToString()),  # index [0]
        _framed(
            schema_id, bytes([2, 2]) + full.SerializeToString()[:-1]
        ),  # truncated inside a field
    ]
    decoder = ProtobufFormat(WriterSchemas(SchemaRegistrySpec(url=schema_registry)))
    parsed, problems = decoder.decode(framed)
    assert parsed[0] == {
        "ts": datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
        "model": "m-1",
        "latency_ms": 0.0,
        "payload": {"country": "DE", "counts": {"x": 3}},
        "device": "WEB",
        "amount": None,
        "amount_text": "12.5",
        "score": 0.25,
        "tags": ["a", "b"],
    }
    assert parsed[1] == {  # proto3 defaults as a reader sees them; unset presence fields None
        "ts": None,
        "model": "",
        "latency_ms": None,
        "payload": None,
        "device": "DEVICE_UNSPECIFIED",
        "amount": None,
        "amount_text": None,
        "score": None,
        "tags": [],
    }
    assert parsed[2] == {"x": 7}
    assert [(row, reason) for row, (reason, _) in problems.items()] == [(3, "undecodable")]


def _framed(schema_id: int, payload: bytes) -> bytes:
    """The Confluent wire format: magic byte 0, the schema id in 4 bytes big-endian, payload."""
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


# --- the registry unreachable: an outage, never a dead letter ----------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _avro_payload(schema: dict, record: dict) -> bytes:
    import io

    from fastavro import parse_schema, schemaless_writer

    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), record)
    return buffer.getvalue()


_SMALL_AVRO = {
    "type": "record",
    "name": "Small",
    "fields": [{"name": "ts", "type": "double"}, {"name": "model", "type": "string"}],
}


def test_a_registry_that_does_not_answer_is_an_outage_and_its_records_decode_once_it_does(
    tmp_path: Path,
) -> None:
    """The decoder against a registry that is down raises RegistryUnreachable for the batch (the
    Kafka reader then leaves the records unclaimed and reads them again, see
    kldrift.io.kafka_source), every time it is asked, and never makes them dead letters; once the
    registry answers, the same decoder decodes the same batch whole. The error names the registry
    without the password in its URL."""
    from kldrift.formats import RegistryUnreachable, WriterSchemas
    from kldrift.formats.avro import AvroFormat
    from kldrift.local.registry import LocalRegistry
    from kldrift.schemas.config import SchemaRegistrySpec

    registry = LocalRegistry(tmp_path / "registry", port=_free_port())
    url_with_secret = registry.url.replace("http://", "http://kldrift:s3cret@")
    decoder = AvroFormat(WriterSchemas(SchemaRegistrySpec(url=url_with_secret)))
    records = [{"ts": 1_700_000_000.5 + i, "model": f"m{i}"} for i in range(3)]
    # Id 1: the id a fresh Apicurio Registry gives the first schema registered (checked below).
    batch = [_framed(1, _avro_payload(_SMALL_AVRO, record)) for record in records]
    for _ in range(2):  # asked again (the reader's retry): still an outage, no dead letter
        with pytest.raises(RegistryUnreachable) as unreachable:
            decoder.decode(batch)
        assert registry.url in str(unreachable.value)
        assert "s3cret" not in str(unreachable.value)
    with registry:
        assert _register(registry.url, "small-value", json.dumps(_SMALL_AVRO), "AVRO") == 1
        parsed, problems = decoder.decode(batch)
    assert problems == {}
    assert parsed == records


def test_kldrift_run_with_its_registry_unreachable_stops_after_the_outage_timeout_in_one_line(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """`kldrift run` whose registry does not answer: the job fails once kafka.outage_timeout has
    passed, with one line naming the registry (not its password), no traceback, and the record
    is not dead-lettered."""
    from kafka import KafkaProducer

    from kldrift.local.kafka import create_topics

    port = _free_port()
    kafka = job_kafka(
        kafka_bootstrap,
        "sr-down",
        uuid.uuid4().hex[:8],
        start_from="earliest",
        format="avro",
        outage_timeout="3s",
    )
    kafka["schema_registry"] = {"url": f"http://kldrift:s3cret@127.0.0.1:{port}"}  # type: ignore[assignment]
    config = latency_job(tmp_path, "sr-down", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 1, kafka["dead_letter_topic"]: 1})
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(kafka["input_topic"], _framed(1, b"\x02"))
    producer.flush()
    producer.close()
    began = time.monotonic()
    with streaming_job("--config", str(config), "--", "--job_server_timeout=20") as job:
        wait_for(lambda: job.process.poll() is not None, 90, "the job to give up")
        job.output = job.process.stdout.read() if job.process.stdout else ""
        job.returncode = job.process.returncode
    took_s = time.monotonic() - began
    assert job.returncode not in (0, None, STOPPED_BY_CTRL_C), job.output[-3000:]
    lines = [line for line in job.output.splitlines() if "kafka.outage_timeout" in line]
    assert len(lines) == 1, job.output[-5000:]
    assert f"the schema registry at http://127.0.0.1:{port} unreachable" in lines[0], lines[0]
    assert "s3cret" not in job.output
    assert "Traceback" not in job.output, job.output[-5000:]
    dead = KafkaConsumer(
        kafka["dead_letter_topic"],
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    assert list(dead) == []
    dead.close()
    print(
        f"registry down, outage_timeout 3 s: exit {job.returncode} after {took_s:.0f} s: {lines[0]}"
    )
