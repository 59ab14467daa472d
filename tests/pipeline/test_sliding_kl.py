"""SlidingKLFromBatches (the composite on event batches) in a streaming pipeline on Prism, driven
by TestStream.

Config: windows of 20 s every 10 s, 10 s allowed lateness; a numeric feature `x` with edges
[0, 10] (bins (-inf, 0), [0, 10), [10, +inf)) and a categorical feature `color` (red, green,
__other__), keyed by `model`. Times are seconds after T0; an event at t lies in the windows
[k*10, k*10 + 20) containing it: t=5 in [-10, 10) and [0, 20), t=15 in [0, 20) and [10, 30).

Expected reports are written out as hand-built histograms; kl_bits is computed here with
scipy.stats.entropy against Q = (b + a) / (M + B a). Reports are compared as a multiset, so a
duplicate or extra firing fails the test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from scipy.stats import entropy

from kldrift.events import EventBatch, EventDecoder, RecordBatch
from kldrift.io.resume import ResumePoint
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options
from kldrift.schemas import Baseline, DriftReport, FeatureBaseline, PipelineConfig
from kldrift.transforms.batches import DEAD_LETTERS, REPORTS, SlidingKLFromBatches

T0 = 1_700_000_000  # a multiple of the 10 s period: window starts are T0 + k*10
SIZE = 20
SMOOTHING = 0.5
SOURCE, PARTITION = "events", 3
KL_TOL = 1e-12

CONFIG = PipelineConfig.model_validate(
    {
        "name": "sliding-kl-test",
        "event_time_field": "ts",
        "key_field": "model",
        "window": {"size": "20s", "period": "10s", "allowed_lateness": "10s"},
        "features": [
            {"name": "x", "kind": "numeric", "edges": [0, 10]},
            {"name": "color", "kind": "categorical", "categories": ["red", "green"]},
        ],
        "drift": {"smoothing": SMOOTHING},
    }
)
BASELINE_COUNTS = {"x": [10, 60, 30], "color": [50, 30, 20]}
BASELINE = Baseline.create(
    [
        FeatureBaseline(name="x", kind="numeric", edges=[0, 10], counts=BASELINE_COUNTS["x"]),
        FeatureBaseline(
            name="color",
            kind="categorical",
            categories=["red", "green"],
            counts=BASELINE_COUNTS["color"],
        ),
    ],
    source="test",
    created_at="2024-01-01T00:00:00Z",
)
DECODER = EventDecoder(CONFIG)


# --- building input ------------------------------------------------------------------------------


def _event(t: float, key: Any = "a", **fields: Any) -> dict[str, Any]:
    return {"ts": T0 + t, "model": key, **fields}


def _batch(
    records: list[dict[str, Any] | bytes], *, first_offset: int = 0, watermark: float | None = None
) -> EventBatch:
    """Records JSON-encoded into a RecordBatch and decoded; `watermark` (s after T0) is the
    reading partition's watermark, carried through the decoder onto the EventBatch."""
    values = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    raw = RecordBatch(
        values,
        list(range(first_offset, first_offset + len(values))),
        source=SOURCE,
        partition=PARTITION,
    )
    if watermark is not None:
        raw.watermark_us = (T0 + watermark) * 1_000_000
    batch = DECODER.decode(raw)
    assert batch.watermark_us == raw.watermark_us
    return batch


def _stamped(batch: EventBatch, t: float | None = None) -> TimestampedValue:
    """The batch at its earliest event time (the source's contract), or at t for an eventless one."""
    if t is None:
        micros = int(batch.event_time_us.min())
    else:
        assert not batch.events
        micros = round((T0 + t) * 1_000_000)
    return TimestampedValue(batch, Timestamp(micros=micros))


# --- expected and actual reports -----------------------------------------------------------------


class Row(NamedTuple):
    key: str | None
    feature: str
    start: float  # seconds after T0
    end: float
    revision: int
    count: int
    missing: int
    invalid: int
    divergences_null: bool  # every divergence None, no drift, no top bins: an empty window
    kl_bits: float | None


def _expected(
    key: str,
    feature: str,
    start: int,
    histogram: tuple[int, ...],
    *,
    revision: int = 0,
    missing: int = 0,
    invalid: int = 0,
) -> Row:
    """A report row from a hand-built window histogram; KL(P||Q) in bits via scipy."""
    counts = np.asarray(histogram, dtype=np.float64)
    baseline = np.asarray(BASELINE_COUNTS[feature], dtype=np.float64)
    assert counts.size == baseline.size
    total = int(counts.sum())
    kl = None
    if total > 0:
        q = (baseline + SMOOTHING) / (baseline.sum() + baseline.size * SMOOTHING)
        kl = float(entropy(counts / total, q, base=2))
    return Row(
        key=key,
        feature=feature,
        start=float(start),
        end=float(start + SIZE),
        revision=revision,
        count=total,
        missing=missing,
        invalid=invalid,
        divergences_null=total == 0,
        kl_bits=kl,
    )


def _both(key: str, start: int, x: tuple[int, ...], color: tuple[int, ...], **kw: Any) -> list:
    return [_expected(key, "x", start, x, **kw), _expected(key, "color", start, color, **kw)]


def _row(report: DriftReport) -> Row:
    divergences = (
        report.kl_bits,
        report.kl_bits_debiased,
        report.entropy_bits,
        report.cross_entropy_bits,
        report.js_bits,
        report.psi,
        report.p_value,
    )
    nulls = all(d is None for d in divergences)
    consistent = not (report.drift or report.top_bins) if nulls else None not in divergences
    if not consistent:
        raise BeamAssertException(f"divergences partly null, or drift without any: {report}")
    return Row(
        report.key,
        report.feature,
        report.window_start.timestamp() - T0,
        report.window_end.timestamp() - T0,
        report.revision,
        report.count,
        report.missing,
        report.invalid,
        nulls,
        report.kl_bits,
    )


def _same(actual: Row, expected: Row) -> bool:
    if actual._replace(kl_bits=None) != expected._replace(kl_bits=None):
        return False
    if actual.kl_bits is None or expected.kl_bits is None:
        return actual.kl_bits is expected.kl_bits
    return math.isclose(actual.kl_bits, expected.kl_bits, rel_tol=0.0, abs_tol=KL_TOL)


def _reports_equal(expected: list[Row]):
    """A matcher: exactly these reports (as a multiset), kl_bits to KL_TOL."""

    def order(row: Row) -> tuple:
        return (row.key or "", row.feature, row.start, row.revision)

    def match(reports: list[DriftReport]) -> None:
        actual = sorted((_row(r) for r in reports), key=order)
        wanted = sorted(expected, key=order)
        if len(actual) != len(wanted) or not all(map(_same, actual, wanted)):
            lines = ["reports differ", "expected:", *map(str, wanted), "actual:", *map(str, actual)]
            raise BeamAssertException("\n  ".join(lines))

    return match


def _dead(reason: str, record: dict[str, Any] | bytes, offset: int) -> tuple:
    value = record if isinstance(record, bytes) else json.dumps(record).encode()
    return (reason, value, SOURCE, PARTITION, offset)


def _run(
    stream: BeamTestStream,
    reports: list[Row],
    dead_letters: Sequence[tuple] = (),
    resume: ResumePoint | None = None,
) -> None:
    """Runs SlidingKLFromBatches on Prism (streaming) and checks both outputs exactly."""
    with beam.Pipeline(options=pipeline_options(local_runner_args([]), streaming=True)) as pipeline:
        outputs = pipeline | stream | SlidingKLFromBatches(CONFIG, BASELINE, resume=resume)
        # Reports leave the internal composite in lists (one per block of keys and window).
        each = outputs[REPORTS] | "EachReport" >> beam.FlatMap(lambda block: block)
        assert_that(each, _reports_equal(reports), label="CheckReports")
        dead_rows = outputs[DEAD_LETTERS] | beam.Map(
            lambda d: (d.reason, d.value, d.source, d.partition, d.offset)
        )
        assert_that(dead_rows, equal_to(list(dead_letters)), label="CheckDeadLetters")


# --- on-time data --------------------------------------------------------------------------------

# Panes [0, 10) and [10, 20) of key "a"; x bins (<0, [0,10), >=10), color bins (red, green, other).
EARLY = [_event(5, x=1, color="red"), _event(7, x=-3, color="green")]
LATE_PANE = [_event(15, x=12, color="blue"), _event(18, x=5, color="red")]
ON_TIME_REPORTS = [
    *_both("a", -10, x=(1, 1, 0), color=(1, 1, 0)),  # t=5, 7
    *_both("a", 0, x=(1, 2, 1), color=(2, 1, 1)),  # t=5, 7, 15, 18
    *_both("a", 10, x=(0, 1, 1), color=(1, 0, 1)),  # t=15, 18
]


def test_on_time_events_report_each_window_once_with_scipy_kl() -> None:
    stream = (
        BeamTestStream()
        .add_elements([_stamped(_batch(EARLY))])
        .add_elements([_stamped(_batch(LATE_PANE, first_offset=2))])
        .advance_watermark_to_infinity()
    )
    _run(stream, ON_TIME_REPORTS)


def test_out_of_order_events_give_the_in_order_result() -> None:
    # Within a batch: times 18, 5, 15; across batches: the second batch holds the earliest event
    # and arrives after the first batch's later ones (the watermark is still before it).
    first = _stamped(_batch([LATE_PANE[1], EARLY[0], LATE_PANE[0]]))
    second = _stamped(_batch([EARLY[1]], first_offset=3))
    stream = (
        BeamTestStream()
        .add_elements([first])
        .advance_watermark_to(T0 + 5)
        .add_elements([second])
        .advance_watermark_to_infinity()
    )
    _run(stream, ON_TIME_REPORTS)


def test_keys_are_reported_separately() -> None:
    records = [
        _event(5, key="a", x=1, color="red"),
        _event(5, key="b", x=12, color="green"),
        _event(6, key="b", x=-1, color="green"),
        _event(7, key="c", x=4, color="blue"),
    ]
    stream = (
        BeamTestStream().add_elements([_stamped(_batch(records))]).advance_watermark_to_infinity()
    )
    per_key = {
        "a": ((0, 1, 0), (1, 0, 0)),
        "b": ((1, 0, 1), (0, 2, 0)),
        "c": ((0, 1, 0), (0, 0, 1)),
    }
    expected = [
        row
        for key, (x, color) in per_key.items()
        for start in (-10, 0)  # every event is in pane [0, 10)
        for row in _both(key, start, x, color)
    ]
    _run(stream, expected)


def test_event_on_a_window_boundary_starts_the_later_windows() -> None:
    # t=10.0 is in [0, 20) and [10, 30), not in [-10, 10) (ends are exclusive); t=9.5 is before it.
    records = [_event(9.5, x=1, color="red"), _event(10.0, x=12, color="green")]
    assert json.loads(json.dumps(records[1]))["ts"] == T0 + 10.0
    stream = (
        BeamTestStream().add_elements([_stamped(_batch(records))]).advance_watermark_to_infinity()
    )
    expected = [
        *_both("a", -10, x=(0, 1, 0), color=(1, 0, 0)),
        *_both("a", 0, x=(0, 1, 1), color=(1, 1, 0)),
        *_both("a", 10, x=(0, 0, 1), color=(0, 1, 0)),
    ]
    _run(stream, expected)


# --- late data -----------------------------------------------------------------------------------


def test_late_events_within_lateness_revise_the_open_window() -> None:
    # Watermark 20: [-10, 10) and [0, 20) fire revision 0. [-10, 10) closed at 10 + 10 <= 20;
    # [0, 20) accepts late data until 20 + 10, so each late event makes a new revision of it.
    stream = (
        BeamTestStream()
        .add_elements([_stamped(_batch([_event(5, x=1, color="red")]))])
        .advance_watermark_to(T0 + 20)
        .add_elements([_stamped(_batch([_event(6, x=11, color="green")], watermark=20))])
        .advance_watermark_to(T0 + 25)
        .add_elements([_stamped(_batch([_event(7, x=-2, color="blue")], watermark=25))])
        .advance_watermark_to_infinity()
    )
    expected = [
        *_both("a", -10, x=(0, 1, 0), color=(1, 0, 0)),
        *_both("a", 0, x=(0, 1, 0), color=(1, 0, 0), revision=0),
        *_both("a", 0, x=(0, 1, 1), color=(1, 1, 0), revision=1),
        *_both("a", 0, x=(1, 1, 1), color=(1, 1, 1), revision=2),
    ]
    _run(stream, expected)


def test_too_late_event_is_dead_lettered_and_never_counted() -> None:
    # Batch watermark 30: t=8 (pane 0) is too late, 0 + 20 + 10 <= 30; t=10 (pane 10) is not,
    # 10 + 30 > 30: [0, 20) has closed but [10, 30) still takes it, as that window's revision 0.
    too_late = _event(8, x=12, color="green")
    stream = (
        BeamTestStream()
        .add_elements([_stamped(_batch([_event(5, x=1, color="red")]))])
        .advance_watermark_to(T0 + 30)
        .add_elements(
            [
                _stamped(
                    _batch([too_late, _event(10, x=-1, color="red")], first_offset=1, watermark=30)
                )
            ]
        )
        .advance_watermark_to_infinity()
    )
    expected = [
        *_both("a", -10, x=(0, 1, 0), color=(1, 0, 0)),
        *_both("a", 0, x=(0, 1, 0), color=(1, 0, 0)),
        *_both("a", 10, x=(1, 0, 0), color=(1, 0, 0)),
    ]
    _run(stream, expected, [_dead("too_late", too_late, offset=1)])


def test_after_a_restart_reported_windows_and_counted_events_are_not_repeated() -> None:
    # The previous run reported every window with end + 10 <= 30 ([-10, 10) and [0, 20)) and read
    # offsets 0-2. Read again: t=5 (offset 0; all its windows reported) is skipped; t=12 (offset
    # 1) counts in [10, 30) only, [0, 20) having been reported; t=25 is new to nothing. Offset 3
    # was never read: t=8, whose windows all closed by the floor, is too late.
    resume = ResumePoint(floor_us=(T0 + 30) * 1_000_000, read_to={(SOURCE, PARTITION): 3})
    too_late = _event(8, x=1, color="red")
    batch = _batch(
        [
            _event(5, x=-1, color="blue"),
            _event(12, x=12, color="red"),
            _event(25, x=1, color="green"),
            too_late,
        ]
    )
    stream = BeamTestStream().add_elements([_stamped(batch)]).advance_watermark_to_infinity()
    expected = [
        *_both("a", 10, x=(0, 1, 1), color=(1, 1, 0)),  # t=12, 25
        *_both("a", 20, x=(0, 1, 0), color=(0, 1, 0)),  # t=25
    ]
    _run(stream, expected, [_dead("too_late", too_late, offset=3)], resume=resume)


# --- bad values and bad records ------------------------------------------------------------------


def test_missing_and_invalid_values_are_counted_apart() -> None:
    records = [
        _event(1, x=1),  # color absent: missing
        _event(2, x=None, color="red"),  # x null: missing
        _event(3, x="abc", color=5.5),  # wrong types: invalid, invalid
        _event(4, x=True, color=3),  # a bool is not a number: invalid; 3 -> "3" -> __other__
        _event(12),  # pane [10, 20) has no value for either feature
    ]
    stream = (
        BeamTestStream().add_elements([_stamped(_batch(records))]).advance_watermark_to_infinity()
    )
    expected = [
        _expected("a", "x", -10, (0, 1, 0), missing=1, invalid=2),
        _expected("a", "color", -10, (1, 0, 1), missing=1, invalid=1),
        _expected("a", "x", 0, (0, 1, 0), missing=2, invalid=2),
        _expected("a", "color", 0, (1, 0, 1), missing=2, invalid=1),
        *_both("a", 10, x=(0, 0, 0), color=(0, 0, 0), missing=1),  # count 0, null divergences
    ]
    _run(stream, expected)


def test_malformed_records_come_out_as_dead_letters() -> None:
    good = _event(5, x=1, color="red")
    bad = [
        b"{not json",
        b"[1, 2]",
        {"model": "a", "x": 1},
        {"ts": "yesterday", "model": "a", "x": 1},
        {"ts": T0 + 5, "x": 1},
    ]
    mixed = _batch([bad[0], good, *bad[1:]])
    only_bad = _batch([b"\xff\xfe", {"ts": T0 + 6, "model": {"nested": 1}}], first_offset=10)
    assert not only_bad.events
    stream = (
        BeamTestStream()
        .add_elements([_stamped(mixed), _stamped(only_bad, t=6)])
        .advance_watermark_to_infinity()
    )
    expected_dead = [
        _dead("not_json", bad[0], 0),
        _dead("not_object", bad[1], 2),
        _dead("missing_event_time", bad[2], 3),
        _dead("invalid_event_time", bad[3], 4),
        _dead("missing_key", bad[4], 5),
        _dead("not_json", b"\xff\xfe", 10),
        _dead("missing_key", {"ts": T0 + 6, "model": {"nested": 1}}, 11),
    ]
    expected = [
        *_both("a", -10, x=(0, 1, 0), color=(1, 0, 0)),
        *_both("a", 0, x=(0, 1, 0), color=(1, 0, 0)),
    ]
    _run(stream, expected, expected_dead)
