"""`kldrift baseline` and `replay` on Parquet and Avro files (written here with pyarrow and fastavro)
give what they give on JSON lines of the same rows, on Prism: every baseline count, learned edge
and category; every report field, every counter and dead letter of a replay. The rows hold nested
records, nulls, a timestamp column as event time (Avro `timestamp-millis`, Parquet
`timestamp[ms, UTC]`; JSON: epoch ms) and two rows to dead-letter; the counts that do not depend on
kldrift's code are also worked out here from the rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from _file_formats import (
    NO_TIME_ROW,
    OLD_CLOCK_ROW,
    config,
    events,
    write_avro,
    write_jsonl,
    write_parquet,
)

from kldrift import SlidingKLDivergence
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.baseline import build_baseline
from kldrift.pipeline.options import pipeline_options
from kldrift.pipeline.replay import ReplaySummary, run_replay
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig, parse_config

ROWS = events()
GOOD = [row for i, row in enumerate(ROWS) if i not in (NO_TIME_ROW, OLD_CLOCK_ROW)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("formats")
    write_jsonl(folder / "events.jsonl", ROWS)
    write_parquet(folder / "events.parquet", ROWS)
    write_avro(folder / "events.avro", ROWS)
    return folder


@pytest.fixture(scope="module")
def job_config(folder: Path) -> PipelineConfig:
    return parse_config(config(folder / "baseline.json"))


@pytest.fixture(scope="module")
def baselines(folder: Path, job_config: PipelineConfig) -> dict[str, Baseline]:
    return {
        suffix: build_baseline(
            job_config,
            str(folder / f"events.{suffix}"),
            str(folder / f"baseline-{suffix}.json"),
            beam_args=local_runner_args([]),
        )
        for suffix in ("jsonl", "parquet", "avro")
    }


def _comparable(baseline: Baseline) -> list[dict]:
    """Everything a baseline holds but where it was read from and when (and the id of those)."""
    return [feature.model_dump() for feature in baseline.features]


@pytest.mark.parametrize("suffix", ["parquet", "avro"])
def test_a_baseline_equals_the_json_baseline_of_the_same_rows(
    baselines: dict[str, Baseline], suffix: str
) -> None:
    assert _comparable(baselines[suffix]) == _comparable(baselines["jsonl"])


def test_the_baseline_counts_are_the_rows_with_a_time(baselines: dict[str, Baseline]) -> None:
    by_name = {feature.name: feature for feature in baselines["parquet"].features}
    latency_nulls = sum(row["latency_ms"] is None for row in GOOD)
    countries = Counter(
        row["payload"]["country"] for row in GOOD if row["payload"] and row["payload"]["country"]
    )
    no_country = len(GOOD) - sum(countries.values())
    assert by_name["latency_ms"].missing == latency_nulls == 60
    assert sum(by_name["latency_ms"].counts) == len(GOOD) - latency_nulls
    assert len(by_name["latency_ms"].edges or []) == 3  # bins: 4
    # top_k 2: the two most frequent countries, in the rows' own counts.
    top = [name for name, _ in sorted(countries.items(), key=lambda c: (-c[1], c[0]))[:2]]
    assert by_name["payload.country"].categories == top
    assert by_name["payload.country"].missing == no_country == 80  # null payload or country
    assert by_name["payload.country"].counts == [
        countries[top[0]],
        countries[top[1]],
        sum(countries.values()) - countries[top[0]] - countries[top[1]],
    ]
    devices = Counter(row["device"] for row in GOOD)
    assert by_name["device"].counts == [devices["ios"], devices["android"], devices["web"]]
    tiers = Counter(row["payload"]["tier"] for row in GOOD if row["payload"])
    assert by_name["payload.tier"].counts == [tiers[1], tiers[2], tiers[3]]


@pytest.fixture(scope="module")
def replays(
    folder: Path, job_config: PipelineConfig, baselines: dict[str, Baseline]
) -> dict[str, tuple[ReplaySummary, list[dict], list[dict]]]:
    done = {}
    for suffix in ("jsonl", "parquet"):
        reports, dead = folder / f"reports-{suffix}.jsonl", folder / f"dead-{suffix}.jsonl"
        summary = run_replay(
            job_config,
            baselines["jsonl"],
            str(folder / f"events.{suffix}"),
            str(reports),
            str(dead),
            beam_args=local_runner_args([]),
        )
        done[suffix] = (summary, _lines(reports), _lines(dead))
    return done


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_parquet_replay_equals_the_json_replay(replays: dict) -> None:
    json_summary, json_reports, _ = replays["jsonl"]
    summary, reports, _ = replays["parquet"]
    assert json_reports and reports == json_reports  # every field of every report, in order
    assert summary == json_summary
    assert summary.emptiness_lines() == json_summary.emptiness_lines()


def test_the_bad_rows_are_dead_lettered_as_in_json(replays: dict) -> None:
    _, _, json_dead = replays["jsonl"]
    summary, _, dead = replays["parquet"]
    assert summary.events_binned == len(GOOD)
    assert summary.dead_letter_reasons == {"missing_event_time": 1, "past_event_time": 1}
    # Row numbers count as line numbers do (from 1); the detail names the same field and times.
    expected = [("missing_event_time", NO_TIME_ROW + 1), ("past_event_time", OLD_CLOCK_ROW + 1)]
    for letters in (dead, json_dead):
        assert [(d["reason"], d["offset"]) for d in letters] == expected
    assert [d["detail"] for d in dead] == [d["detail"] for d in json_dead]
    assert "1990-01-01T00:00:00Z" in dead[1]["detail"]
    assert json.loads(dead[0]["value"])["model"] == ROWS[NO_TIME_ROW]["model"]


def test_beams_own_readers_into_the_library_report_what_replay_does(
    folder: Path, job_config: PipelineConfig, baselines: dict[str, Baseline], replays: dict
) -> None:
    """A user's pipeline: Beam's ReadFromParquet and ReadFromAvro (their dicts: aware datetimes,
    nested dicts, None) straight into SlidingKLDivergence, both in one job."""
    _, json_reports, _ = replays["jsonl"]
    readers = {
        "parquet": beam.io.ReadFromParquet(str(folder / "events.parquet")),
        "avro": beam.io.ReadFromAvro(str(folder / "events.avro")),
    }
    options = pipeline_options(local_runner_args([]), streaming=False)
    with beam.Pipeline(options=options) as pipeline:
        for name, reader in readers.items():
            outputs = (
                pipeline
                | f"Read[{name}]" >> reader
                | f"Drift[{name}]" >> SlidingKLDivergence(job_config, baselines["jsonl"])
            )
            _ = (
                outputs["reports"]
                | f"Json[{name}]" >> beam.Map(lambda r: r.to_json_bytes().decode())
                | f"Write[{name}]"
                >> beam.io.WriteToText(str(folder / f"library-{name}"), shard_name_template="")
            )
            _ = (
                outputs["dead_letters"]
                | f"Reasons[{name}]" >> beam.Map(lambda d: d.reason)
                | f"WriteDead[{name}]"
                >> beam.io.WriteToText(str(folder / f"library-dead-{name}"), shard_name_template="")
            )
    for name in readers:
        reports = sorted(
            _lines(folder / f"library-{name}"),
            key=lambda r: (r["window_start"], r["key"], r["feature"], r["revision"]),
        )
        assert reports == json_reports, name
        reasons = sorted((folder / f"library-dead-{name}").read_text().split())
        assert reasons == ["missing_event_time", "past_event_time"], name
