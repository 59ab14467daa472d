"""kafka-python's log as `kldrift run` shows it: a lost connection is one line, except once the job
is being stopped, when the connections it closes mid-request are not news."""

from __future__ import annotations

import logging

import pytest

from kldrift.io import kafka_log

pytestmark = pytest.mark.unit

CONNECTED = "<KafkaConnection node_id=1 host=[127.0.0.1:9092]>: Connected"
LOST = (
    "<KafkaConnection node_id=1 host=[127.0.0.1:9092]>: Connection lost: "
    "KafkaConnectionError: socket disconnected"
)


def _emit(handler: kafka_log.KafkaStateLog, message: str, level: int = logging.ERROR) -> None:
    handler.emit(logging.LogRecord("kafka.conn", level, __file__, 1, message, None, None))


def test_a_lost_connection_is_one_line_until_the_job_is_stopping(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = kafka_log.KafkaStateLog()
    _emit(handler, CONNECTED, logging.INFO)
    _emit(handler, LOST)
    _emit(handler, LOST)  # said once
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "kafka: connection to 127.0.0.1:9092 lost (KafkaConnectionError: socket disconnected); "
        "retrying"
    ]
    stopping = kafka_log.KafkaStateLog()
    _emit(stopping, CONNECTED, logging.INFO)
    try:
        kafka_log.quiet()
        _emit(stopping, LOST)
        _emit(stopping, "Unexpected error from the broker", logging.ERROR)
    finally:
        kafka_log._quiet.clear()  # this process goes on running other tests
    assert capsys.readouterr().err == ""
