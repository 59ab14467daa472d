"""The library's front door: `from kldrift import SlidingKLDivergence` applied to a user's own
PCollection (timestamped dicts from a TestStream, JSON lines from a file, dicts, beam.Rows), on
Prism. Its reports must equal `kldrift replay`'s on the same events (counts exactly, kl_bits to
1e-12); replay's own numbers are checked against scipy in test_cli_batch/test_sliding_kl, and one
window here is recomputed with scipy as well.

Config: windows of 20 s every 10 s, 10 s allowed lateness, keyed by `model`; a numeric feature `x`
with edges [0, 10] and a categorical `color` (red, green, __other__).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from scipy.stats import entropy

import kldrift
from kldrift import (
    Baseline,
    BaselineMismatch,
    ConfigError,
    DriftReport,
    SlidingKLDivergence,
    parse_config,
)
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options
from kldrift.pipeline.replay import run_replay
from kldrift.schemas import FeatureBaseline

pytestmark = pytest.mark.services  # Prism

T0 = 1_700_000_000  # a multiple of the 10 s period
KL_TOL = 1e-12
CONFIG = parse_config(
    {
        "name": "library-test",
        "event_time_field": "ts",
        "key_field": "model",
        "window": {"size": "20s", "period": "10s", "allowed_lateness": "10s"},
        "features": [
            {"name": "x", "kind": "numeric", "edges": [0, 10]},
            {"name": "color", "kind": "categorical", "categories": ["red", "green"]},
        ],
    }
)
BASELINE_COUNTS = {"x": [10, 60, 30], "color": [50, 30, 20]}
BASELINE = Baseline.create(
    [
        FeatureBaseline(name="x", kind="numeric", edges=[0, 10], counts=BASELINE_COUNTS["x"]),
        FeatureBaseline(
            name="color", kind="categorical", categories=["red", "green"], counts=[50, 30, 20]
        ),
    ],
    source="test",
    created_at="2024-01-01T00:00:00Z",
)
COLORS = ["red", "green", "blue", "red", None]


def _event(t: float, model: str, i: int) -> dict[str, Any]:
    """A deterministic event at T0 + t: x cycles over all three bins, color over red, green,
    __other__ (blue) and missing."""
    event: dict[str, Any] = {"ts": T0 + t, "model": model, "x": (i * 7) % 23 - 4}
    color = COLORS[i % len(COLORS)]
    if color is not None:
        event["color"] = color
    return event


ON_TIME = [_event(0.5 + i * 1.3, "ab"[i % 2], i) for i in range(22)]  # t from 0.5 to 27.8
LATE = _event(12.0, "a", 99)  # after watermark 20: revises [0, 20), on time for [10, 30)
TOO_LATE = _event(3.0, "a", 98)  # after watermark 45: every window holding it closed by 30


# --- what replay says -----------------------------------------------------------------------


def _replay(tmp_path: Path, lines: list[bytes]) -> tuple[list[DriftReport], list[dict]]:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    out, dead = tmp_path / "replay.jsonl", tmp_path / "replay-dead.jsonl"
    run_replay(CONFIG, BASELINE, str(events), str(out), str(dead), beam_args=local_runner_args([]))
    reports = [DriftReport.model_validate_json(x) for x in out.read_bytes().splitlines()]
    dead_letters = [json.loads(x) for x in dead.read_bytes().splitlines()]
    return reports, dead_letters


def _window_id(report: DriftReport) -> tuple:
    return (report.key, report.feature, report.window_start)


def _final(reports: list[DriftReport]) -> dict[tuple, DriftReport]:
    """Each window's newest revision."""
    final: dict[tuple, DriftReport] = {}
    for report in sorted(reports, key=lambda r: r.revision):
        final[_window_id(report)] = report
    return final


def _differences(actual: dict[tuple, DriftReport], expected: dict[tuple, DriftReport]) -> list:
    problems: list[Any] = []
    if set(actual) != set(expected):
        problems.append(("windows", sorted(set(actual) ^ set(expected), key=str)))
    for window in set(actual) & set(expected):
        got, want = actual[window], expected[window]
        fields = ("count", "missing", "invalid", "counts", "bins", "baseline_id", "drift")
        for name in fields:
            if getattr(got, name) != getattr(want, name):
                problems.append((window, name, getattr(got, name), getattr(want, name)))
        if not math.isclose(got.kl_bits or 0, want.kl_bits or 0, rel_tol=0, abs_tol=KL_TOL):
            problems.append((window, "kl_bits", got.kl_bits, want.kl_bits))
    return problems


def _matches_replay(expected: list[DriftReport]):
    expected_final = _final(expected)

    def check(reports: list[DriftReport]) -> None:
        problems = _differences(_final(reports), expected_final)
        if problems:
            raise BeamAssertException(f"reports differ from replay's: {problems[:5]}")

    return check


def _json(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


# --- timestamped dicts from a TestStream ----------------------------------------------------


def _stamped(event: dict[str, Any]) -> TimestampedValue:
    """The event as a user's source would give it: a dict stamped at its event time."""
    return TimestampedValue(event, Timestamp(micros=round(event["ts"] * 1_000_000)))


def test_timestamped_dicts_with_late_and_too_late_events_report_what_replay_does(
    tmp_path: Path,
) -> None:
    expected, _ = _replay(tmp_path, [_json(e) for e in [*ON_TIME, LATE]])
    with_too_late, _ = _replay(tmp_path, [_json(e) for e in [*ON_TIME, LATE, TOO_LATE]])
    # The check can fail: had the too-late event been counted, these windows would differ.
    assert _differences(_final(with_too_late), _final(expected))
    late_window = ("a", "x", _start(0))

    stream = (
        BeamTestStream()
        .add_elements([_stamped(e) for e in ON_TIME[:12]])
        .add_elements([_stamped(e) for e in ON_TIME[12:]])
        .advance_watermark_to(T0 + 20)
        .add_elements([_stamped(LATE)])
        .advance_watermark_to(T0 + 45)
        .add_elements([_stamped(TOO_LATE)])
        .advance_watermark_to_infinity()
    )

    def revisions_of_late_window(reports: list[DriftReport]) -> None:
        counts = sorted((r.revision, r.count) for r in reports if _window_id(r) == late_window)
        final_count = _final(expected)[late_window].count
        # Revision 0 at the watermark without the late event, revision 1 with it.
        if counts != [(0, final_count - 1), (1, final_count)]:
            raise BeamAssertException(f"window [0, 20) of key a: revisions {counts}")

    pipeline = beam.Pipeline(options=pipeline_options(local_runner_args([]), streaming=True))
    outputs = pipeline | stream | SlidingKLDivergence(CONFIG, BASELINE, event_time="timestamp")
    assert_that(outputs["reports"], _matches_replay(expected), label="AsReplay")
    assert_that(outputs["reports"], revisions_of_late_window, label="Revisions")
    assert_that(outputs["dead_letters"], equal_to([]), label="NoDeadLetters")
    result = pipeline.run()
    result.wait_until_finish()
    # The runner dropped the too-late event after kldrift binned it: the counters show it.
    binned, windowed = (_counter(result, name) for name in ("events_binned", "events_windowed"))
    assert (binned, windowed) == (len(ON_TIME) + 2, len(ON_TIME) + 1)


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    query = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace("kldrift").with_name(name)
    )
    return sum(c.committed or c.attempted or 0 for c in query["counters"])


def _start(t: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(T0 + t, tz=UTC)


def test_one_window_against_scipy(tmp_path: Path) -> None:
    """Replay, the reference above, recomputed independently for one window: key a, feature
    color, [0, 20), from the events themselves."""
    reports, _ = _replay(tmp_path, [_json(e) for e in ON_TIME])
    report = _final(reports)[("a", "color", _start(0))]
    in_window = [e for e in ON_TIME if e["model"] == "a" and T0 <= e["ts"] < T0 + 20]
    colors = Counter(e.get("color") for e in in_window)
    p = np.array([colors["red"], colors["green"], colors["blue"]], dtype=float)
    smoothing = CONFIG.drift.smoothing
    q = np.array(BASELINE_COUNTS["color"]) + smoothing
    assert report.missing == colors[None] > 0
    assert report.count == len(in_window) - colors[None]  # N: the events with a color
    assert report.kl_bits == pytest.approx(entropy(p / p.sum(), q / q.sum(), base=2), abs=KL_TOL)


# --- a file, as JSON lines, dicts or Rows ---------------------------------------------------

MALFORMED = [b"{not json", b'{"model": "a", "x": 1}', b"[1, 2]", b'{"ts": "soon", "model": "a"}']


def _row(event: dict[str, Any]) -> beam.Row:
    return beam.Row(**event)


@pytest.mark.parametrize("form", ["bytes", "text", "dict", "row"])
def test_events_from_a_file_report_what_replay_does(tmp_path: Path, form: str) -> None:
    valid = [_json(e) for e in [*ON_TIME, LATE, TOO_LATE]]
    malformed = {"bytes": MALFORMED, "text": MALFORMED, "dict": MALFORMED[1:], "row": []}[form]
    lines = [*valid[:5], *malformed, *valid[5:]]
    expected, expected_dead = _replay(tmp_path, lines)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    # Dead letters of generic input carry no offset: compare reasons and values.
    dead_expected = [(d["reason"], d["value"].encode()) for d in expected_dead]

    with beam.Pipeline(
        options=pipeline_options(local_runner_args([]), streaming=False)
    ) as pipeline:
        raw = pipeline | beam.io.ReadFromText(str(path), coder=beam.coders.BytesCoder())
        events = raw
        if form == "text":
            events = raw | "Text" >> beam.Map(bytes.decode)
        elif form in ("dict", "row"):
            events = raw | "Dicts" >> beam.Map(json.loads)
        if form == "row":
            events = events | "Rows" >> beam.Map(_row)
        outputs = events | SlidingKLDivergence(CONFIG, BASELINE)
        assert_that(outputs["reports"], _matches_replay(expected), label="AsReplay")
        dead = outputs["dead_letters"] | beam.Map(lambda d: (d.reason, d.value))
        if form in ("bytes", "text"):
            assert_that(dead, equal_to(dead_expected), label="DeadLetters")
        else:  # a dead letter of an object carries it as JSON text
            wanted = [(r, json.dumps(json.loads(v)).encode()) for r, v in dead_expected]
            assert_that(dead, equal_to(wanted), label="DeadLetters")


# --- construction-time errors (no runner) -----------------------------------------------------


def test_front_door_exports_what_all_lists() -> None:
    for name in kldrift.__all__:
        assert getattr(kldrift, name) is not None


def test_a_baseline_that_does_not_fit_fails_at_construction_naming_the_feature() -> None:
    other = Baseline.create(
        [
            FeatureBaseline(name="x", kind="numeric", edges=[0, 5], counts=[1, 1, 1]),
            FeatureBaseline(
                name="color", kind="categorical", categories=["red", "green"], counts=[1, 1, 1]
            ),
        ],
        source="test",
        created_at="2024-01-01T00:00:00Z",
    )
    with pytest.raises(BaselineMismatch, match="'x'"):
        SlidingKLDivergence(CONFIG, other)


def test_bad_arguments_fail_at_construction_naming_them() -> None:
    with pytest.raises(ValueError, match="event_time"):
        SlidingKLDivergence(CONFIG, BASELINE, event_time="processing")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        SlidingKLDivergence(CONFIG, BASELINE, max_batch=0)
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        kldrift.WriteReportsToKafka("", "reports")
    with pytest.raises(Exception, match="no_such_setting"):
        kldrift.WriteReportsToKafka("localhost:9092", "reports", client={"no_such_setting": 1})


def test_rows_with_datetime_times_and_nested_rows_report_what_replay_does(tmp_path: Path) -> None:
    """Schema'd rows as a SQL or Pub/Sub-schema pipeline holds them: event time a datetime, the
    categorical feature inside a nested Row (read by the dotted name `meta.color`)."""
    from datetime import UTC, datetime

    config = parse_config(
        {
            **CONFIG.model_dump(mode="json", exclude={"features"}),
            "features": [
                {"name": "x", "kind": "numeric", "edges": [0, 10]},
                {"name": "meta.color", "kind": "categorical", "categories": ["red", "green"]},
            ],
        }
    )
    baseline = Baseline.create(
        [
            BASELINE.features[0],
            BASELINE.features[1].model_copy(update={"name": "meta.color"}),
        ],
        source="test",
        created_at="2024-01-01T00:00:00Z",
    )
    nested = [
        {"ts": e["ts"], "model": e["model"], "x": e["x"], "meta": {"color": e.get("color")}}
        for e in ON_TIME
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(_json(e) + b"\n" for e in nested))
    out = tmp_path / "replay.jsonl"
    run_replay(config, baseline, str(path), str(out), beam_args=local_runner_args([]))
    expected = [DriftReport.model_validate_json(x) for x in out.read_bytes().splitlines()]
    rows = [
        beam.Row(
            ts=datetime.fromtimestamp(e["ts"], tz=UTC),
            model=e["model"],
            x=e["x"],
            meta=beam.Row(color=e["meta"]["color"]),
        )
        for e in nested
    ]
    with beam.Pipeline(
        options=pipeline_options(local_runner_args([]), streaming=False)
    ) as pipeline:
        outputs = pipeline | beam.Create(rows) | SlidingKLDivergence(config, baseline)
        assert_that(outputs["reports"], _matches_replay(expected), label="AsReplay")
        assert_that(outputs["dead_letters"], equal_to([]), label="NoDeadLetters")


# --- the outputs' windows, Beam's default runner, the counters ------------------------------


class _WindowOf(beam.DoFn):
    """Each element with the window and timestamp it arrives in, as epoch seconds."""

    def process(
        self,
        element: Any,
        window: Any = beam.DoFn.WindowParam,
        stamp: Any = beam.DoFn.TimestampParam,
    ) -> Iterator[tuple]:
        if isinstance(window, beam.window.IntervalWindow):
            where: tuple = (float(window.start), float(window.end))
        else:
            where = (type(window).__name__,)
        end = element.window_end.timestamp() if isinstance(element, DriftReport) else None
        yield end, where, float(stamp)


def test_reports_arrive_in_period_windows_and_count_once_rewindowed() -> None:
    """README's "Windows of the outputs": a report of [start, end) sits in the IntervalWindow
    [end + lateness - period, end + lateness) at its last ms; dead letters in the GlobalWindow.
    Count.Globally() refuses the reports' windowing, and counts them once re-windowed."""
    lateness, period = 10.0, 10.0  # CONFIG's
    with beam.Pipeline(
        options=pipeline_options(local_runner_args([]), streaming=False)
    ) as pipeline:
        outputs = (
            pipeline | beam.Create([_json(e) for e in ON_TIME] + [b"{not json"])
        ) | SlidingKLDivergence(CONFIG, BASELINE)

        def in_their_windows(found: list[tuple]) -> None:
            wrong = [
                (end, where, stamp)
                for end, where, stamp in found
                if where != (end + lateness - period, end + lateness)
                or abs(stamp - (end + lateness - 0.001)) > 1e-6
            ]
            if wrong or not found:
                raise BeamAssertException(f"reports outside their windows: {wrong[:3]}")

        reports = outputs["reports"]
        assert_that(reports | "Windows" >> beam.ParDo(_WindowOf()), in_their_windows)
        dead_windows = outputs["dead_letters"] | "DeadWindows" >> beam.ParDo(_WindowOf())
        dead_where = dead_windows | beam.Map(lambda found: found[1])
        assert_that(dead_where, equal_to([("GlobalWindow",)]), label="DeadInGlobalWindow")
        with pytest.raises(ValueError, match="GlobalWindows"):
            _ = reports | "CountAsTheyAre" >> beam.combiners.Count.Globally()
        counted = (
            reports
            | "Rewindow" >> beam.WindowInto(beam.window.GlobalWindows())
            | "Count" >> beam.combiners.Count.Globally()
        )
        # Keys a and b each have events in the windows starting at -10, 0, 10 and 20 s (t from
        # 0.5 to 27.8 s): 2 keys x 4 windows x 2 features.
        assert_that(counted, equal_to([16]), label="Counted")


def test_beams_default_runner_reports_what_replay_does_on_bounded_input(tmp_path: Path) -> None:
    """No runner flag at all: Beam's DirectRunner (Prism if it can fetch it, else the Python
    FnApiRunner) runs the composite on a bounded PCollection; the kldrift counters are read from
    its PipelineResult as README shows."""
    expected, _ = _replay(tmp_path, [_json(e) for e in ON_TIME])
    pipeline = beam.Pipeline()
    outputs = (
        pipeline
        | beam.Create([*ON_TIME, {"model": "a", "x": 1}])
        | SlidingKLDivergence(CONFIG, BASELINE)
    )
    assert_that(outputs["reports"], _matches_replay(expected), label="AsReplay")
    result = pipeline.run()
    result.wait_until_finish()

    from apache_beam.metrics.metric import MetricsFilter

    counters = result.metrics().query(MetricsFilter().with_namespace("kldrift"))["counters"]
    totals = {c.key.metric.name: c.committed for c in counters}
    assert totals["events_binned"] == len(ON_TIME)
    assert totals["records_dead_lettered"] == 1  # the event without a time
    assert totals["reports"] == len(expected) == 16


# --- Avro in the Confluent wire format, through the session's Schema Registry ---------------

_AVRO_EVENT = {
    "type": "record",
    "name": "LibraryEvent",
    "fields": [
        {"name": "ts", "type": "double"},
        {"name": "model", "type": "string"},
        {"name": "x", "type": "long"},
        {"name": "color", "type": ["null", "string"], "default": None},
    ],
}


def test_avro_wire_format_bytes_report_what_replay_does_on_their_json(
    tmp_path: Path, schema_registry: str
) -> None:
    """format="avro": Confluent wire-format bytes (confluent-kafka's AvroSerializer, which
    registers the schema) decode to the events their JSON holds, and the bad ones are dead
    letters with kldrift run's reasons and their raw bytes."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = AvroSerializer(
        SchemaRegistryClient({"url": schema_registry}), json.dumps(_AVRO_EVENT)
    )
    context = SerializationContext("library-avro", MessageField.VALUE)
    framed = [serialize({"color": None, **e}, context) for e in ON_TIME]
    assert all(isinstance(value, bytes) for value in framed)
    bad = [
        _json(ON_TIME[0]),  # JSON where Avro is expected
        b"\x00\x7f\xff\xff\xf0" + framed[0][5:],  # an id the registry does not have
        framed[1][:-2],  # truncated
    ]
    expected, _ = _replay(tmp_path, [_json(e) for e in ON_TIME])
    with beam.Pipeline(
        options=pipeline_options(local_runner_args([]), streaming=False)
    ) as pipeline:
        outputs = (
            pipeline
            | beam.Create([*framed, *bad])
            | SlidingKLDivergence(
                CONFIG, BASELINE, format="avro", schema_registry={"url": schema_registry}
            )
        )
        assert_that(outputs["reports"], _matches_replay(expected), label="AsReplay")
        dead = outputs["dead_letters"] | beam.Map(lambda d: (d.reason, d.value))
        wanted = [("not_wire_format", bad[0]), ("unknown_schema", bad[1]), ("undecodable", bad[2])]
        assert_that(dead, equal_to(wanted), label="DeadLetters")


def test_a_non_json_format_without_a_registry_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="schema_registry"):
        SlidingKLDivergence(CONFIG, BASELINE, format="protobuf")
    with pytest.raises(ConfigError, match="schema_registry: url"):
        SlidingKLDivergence(CONFIG, BASELINE, format="avro", schema_registry={"url": "registry"})
    with pytest.raises(ValueError, match="format"):
        SlidingKLDivergence(CONFIG, BASELINE, format="xml")  # type: ignore[arg-type]
