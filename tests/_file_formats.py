"""One small event set written as JSON lines, Parquet (pyarrow) and Avro (fastavro): nested
records, nulls, a timestamp column as event time, an enum, and two rows a reader must dead-letter
(no event time; a 1990 clock, before min_event_time)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0_MS = 1_700_000_400_000  # a multiple of 60 s, in ms
ROWS = 600  # one per second: 10 minutes
COUNTRIES = ["US", "DE", "FR", "BR"]
DEVICES = ["ios", "android", "web"]
NO_TIME_ROW = 100  # 0-based: line/row 101 of the file
OLD_CLOCK_ROW = 200
OLD_CLOCK_MS = 631_152_000_000  # 1990-01-01T00:00:00Z

PARQUET_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("model", pa.string()),
        ("latency_ms", pa.float64()),
        ("payload", pa.struct([("country", pa.string()), ("tier", pa.int64())])),
        ("device", pa.dictionary(pa.int32(), pa.string())),
    ]
)
AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "model", "type": "string"},
        {"name": "latency_ms", "type": ["null", "double"]},
        {
            "name": "payload",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Payload",
                    "fields": [
                        {"name": "country", "type": ["null", "string"]},
                        {"name": "tier", "type": "long"},
                    ],
                },
            ],
        },
        {"name": "device", "type": {"type": "enum", "name": "Device", "symbols": DEVICES}},
    ],
}


def events(rows: int = ROWS, seed: int = 4) -> list[dict[str, Any]]:
    """The events as JSON would hold them: `ts` in epoch ms (event_time_unit: ms), null where a
    value is absent (every 10th latency, every 15th payload, every 15th country)."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(rows):
        ts: int | None = T0_MS + i * 1000
        if i == NO_TIME_ROW:
            ts = None
        elif i == OLD_CLOCK_ROW:
            ts = OLD_CLOCK_MS
        country = COUNTRIES[int(rng.choice(4, p=[0.5, 0.25, 0.15, 0.1]))]
        payload = {"country": None if i % 15 == 8 else country, "tier": int(rng.integers(1, 4))}
        made.append(
            {
                "ts": ts,
                "model": "ab"[i % 2],
                "latency_ms": None if i % 10 == 3 else round(float(rng.lognormal(3, 1)), 3),
                "payload": None if i % 15 == 7 else payload,
                "device": DEVICES[int(rng.integers(3))],
            }
        )
    return made


def _as_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _with_datetimes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**row, "ts": _as_datetime(row["ts"])} for row in rows]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int = 256) -> Path:
    table = pa.Table.from_pylist(_with_datetimes(rows), schema=PARQUET_SCHEMA)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_avro(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(AVRO_SCHEMA), _with_datetimes(rows))
    return path


def config(baseline: Path) -> dict[str, Any]:
    """Learned bins (latency quantiles, country top 2), fixed ones (device, nested tier)."""
    return {
        "name": "formats",
        "event_time_field": "ts",
        "event_time_unit": "ms",
        "key_field": "model",
        "window": {"size": "2m", "period": "1m"},
        "features": [
            {"name": "latency_ms", "kind": "numeric", "bins": 4},
            {"name": "payload.country", "kind": "categorical", "top_k": 2},
            {"name": "payload.tier", "kind": "numeric", "edges": [2, 3]},
            {"name": "device", "kind": "categorical", "categories": ["ios", "android"]},
        ],
        "baseline": str(baseline),
    }
