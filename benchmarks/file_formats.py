"""`kldrift baseline` (and the reader + decoder alone) on the same events as JSON lines, Parquet and
Avro, in one run: events/s per file format.

    python -m benchmarks.file_formats [--events N] [--trials T]

The events are kldrift.synthetic's training events (seed 7) with the demo config's four features
(`amount` quantile bins and `device` top 5 learned, so the job runs every step of `kldrift
baseline`). Parquet and Avro hold `ts` as a timestamp (`timestamp[us, UTC]`, Avro
`timestamp-micros`), as a data lake would; JSON lines hold epoch seconds. Each trial runs the
formats one after another (order rotated per trial) in this process on Prism (LOOPBACK), after an
untimed warm-up job; the median of the trials is printed. "read+decode" is the file reader and
EventDecoder alone, in CPU seconds of this process (no runner), the ceiling the job shares with
binning.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from kldrift.events import EventDecoder
from kldrift.io.files import _ReadBatches
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.baseline import build_baseline
from kldrift.schemas.config import PipelineConfig, parse_config
from kldrift.synthetic import demo_config, training_lines

FORMATS = ("jsonl", "parquet", "avro")
AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "model", "type": "string"},
        {"name": "latency_ms", "type": "double"},
        {"name": "amount", "type": "double"},
        {
            "name": "payload",
            "type": {
                "type": "record",
                "name": "Payload",
                "fields": [{"name": "country", "type": "string"}],
            },
        },
        {"name": "device", "type": "string"},
    ],
}


def write_files(folder: Path, count: int) -> dict[str, Path]:
    lines = list(training_lines(count, seed=7))
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rows = []
    for line in lines:
        row = json.loads(line)
        row["ts"] = epoch + timedelta(microseconds=round(row["ts"] * 1_000_000))
        rows.append(row)
    pq.write_table(pa.Table.from_pylist(rows), folder / "events.parquet")
    with (folder / "events.avro").open("wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(AVRO_SCHEMA), rows)
    return {name: folder / f"events.{name}" for name in FORMATS}


def baseline_s(config: PipelineConfig, path: Path, output: Path) -> float:
    started = time.monotonic()
    build_baseline(config, str(path), str(output), beam_args=local_runner_args([]))
    return time.monotonic() - started


def read_decode_cpu_s(config: PipelineConfig, path: Path) -> float:
    decoder = EventDecoder(config)
    started = time.process_time()
    for batch in _ReadBatches().process(str(path)):
        decoder.decode_columns(batch)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    config = parse_config(demo_config())
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        files = write_files(folder, args.events)
        sizes = {name: path.stat().st_size / 2**20 for name, path in files.items()}
        build_baseline(
            config, str(files["jsonl"]), str(folder / "warm.json"), beam_args=local_runner_args([])
        )
        job: dict[str, list[float]] = {name: [] for name in FORMATS}
        cpu: dict[str, list[float]] = {name: [] for name in FORMATS}
        for trial in range(args.trials):
            order = FORMATS[trial % 3 :] + FORMATS[: trial % 3]
            for name in order:
                job[name].append(baseline_s(config, files[name], folder / f"b-{name}.json"))
                cpu[name].append(read_decode_cpu_s(config, files[name]))
    print(f"{args.events:,} events, median of {args.trials} trials")
    for name in FORMATS:
        job_s, cpu_s = statistics.median(job[name]), statistics.median(cpu[name])
        print(
            f"{name:8} {sizes[name]:6.1f} MiB  kldrift baseline {args.events / job_s:9,.0f} events/s"
            f" ({job_s:.1f} s)   read+decode {args.events / cpu_s:9,.0f} events/s (CPU)"
        )
        print(f"{'':8} trials (s): {', '.join(f'{s:.1f}' for s in job[name])}")


if __name__ == "__main__":
    main()
