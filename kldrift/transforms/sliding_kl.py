"""SlidingKLDivergence: drift reports, in bits, for any PCollection of events (JSON bytes, dicts,
beam.Row). The composite a Beam pipeline applies; `kldrift run` and `kldrift replay` use the same
steps behind their own Kafka and file sources."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from kldrift.events import EventBatch, EventDecoder, RecordBatch
from kldrift.formats import FORMATS, record_format
from kldrift.io import batch_coder  # noqa: F401  # registers the batch coders
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig, SchemaRegistrySpec, parse_schema_registry
from kldrift.schemas.report import DriftReport, WindowSummary
from kldrift.transforms.batches import DEAD_LETTERS, REPORTS, SUMMARIES, SlidingKLFromBatches
from kldrift.transforms.score import BaselineUpdates

EventTime = Literal["field", "timestamp"]
Format = Literal["json", "avro", "protobuf"]
MAX_BATCH = 4096
"""Events binned together at most (as many as a bundle holds, up to this)."""


class SlidingKLDivergence(beam.PTransform):
    """Drift reports, in bits, for each (key, feature, sliding event-time window) of a PCollection.

    Each element is one event: JSON text (``bytes`` or ``str``), a ``dict``, or a ``beam.Row``
    (nested Rows read as nested objects); with ``format="avro"`` or ``"protobuf"``, the ``bytes``
    of an Avro or Protobuf record in the Confluent wire format (a Kafka record's value as
    Confluent's serializers write it). Events are binned in numpy batches (up to a bundle, at
    most ``max_batch``), counted into pane histograms, summed into sliding windows and scored
    against the baseline. A window reports when the watermark passes its end (revision 0), and
    again for each firing of late data (revision 1, 2, ...) until its end + allowed lateness.

    Args:
        config: the pipeline config (``load_config``); its ``kafka`` section is not used here.
        baseline: the training data's histograms (``read_baseline``), checked against ``config``
            now: a mismatch raises ``BaselineMismatch`` naming the feature.
        event_time: ``"field"`` reads ``config.event_time_field`` (epoch seconds/ms, RFC 3339, or
            a datetime); ``"timestamp"`` takes each element's Beam timestamp. Either way the
            runner's watermark, which follows the input's timestamps, decides when a window
            closes: data behind it by more than the window size + allowed lateness is dropped by
            the runner (kldrift's ``events_binned`` minus ``events_windowed`` counters count it).
        baseline_updates: newer baselines with the same bins for a running job (optional).
        max_batch: the most events binned in one numpy batch.
        format: ``"json"`` (default), or ``"avro"``/``"protobuf"``: elements are Confluent
            wire-format bytes, decoded with their writer schema from ``schema_registry`` as
            ``kldrift run`` decodes ``kafka.format`` (same dicts, same dead-letter reasons:
            ``not_wire_format``, ``unknown_schema``, ``undecodable``). A registry that does
            not answer fails the bundle (``RegistryUnreachable``, naming it; nothing is
            dead-lettered for it): the runner's retry policy decides what follows.
        schema_registry: a ``SchemaRegistrySpec`` or its dict (``{"url": ..., "client": {...}}``,
            as ``kafka.schema_registry`` in a config), required with avro/protobuf.

    Returns:
        ``{"reports": PCollection[DriftReport], "summaries": PCollection[WindowSummary],
        "dead_letters": PCollection[DeadLetter]}``: a report per (key, feature, window,
        revision), one summary per (key, window, revision) over its features (one verdict, see
        README "The window summary"); an element that is not an event (bad JSON, no event time,
        no key...) is a dead letter with its reason; nothing is dropped silently. Summaries are
        windowed and stamped as the reports of their window.

    Windowing of the outputs:
        A report of the window [start, end) is stamped at end + ``allowed_lateness`` - 1 ms, in
        the ``IntervalWindow`` [end + allowed_lateness - period, end + allowed_lateness) (Beam's
        ``FixedWindows(period)``, offset): with 1-minute periods and no lateness, the report of
        [00:00, 00:10) is in [00:09, 00:10). Dead letters are in the ``GlobalWindow``,
        stamped at the earliest event time of their batch. A global combine of the reports
        (``beam.combiners.Count.Globally()``) therefore refuses their windowing (Beam asks for
        ``.without_defaults()``); re-window first: ``reports | beam.WindowInto(GlobalWindows())``
        on bounded input, or into your own windows (or with a trigger) on a stream.

    Example:
        Twenty events, all from "de", in the window [00:01, 00:02) of 2024-01-01, against a
        baseline of 50 "de" and 50 "fr": with the default smoothing (0.5 added to each of the 3
        baseline bins, ``__other__`` included) Q(de) = 50.5 / 101.5, so KL = log2(101.5 / 50.5)
        = 1.007 bits. ``options`` are your pipeline's options; here Prism as kldrift's set-up
        installed it (``prism_location()``; Prism runs the Python worker in this process).

        >>> import apache_beam as beam
        >>> from apache_beam.options.pipeline_options import PipelineOptions
        >>> from kldrift import SlidingKLDivergence, baseline_from_events, parse_config
        >>> from kldrift import prism_location
        >>> options = PipelineOptions(
        ...     ["--runner=PrismRunner", f"--prism_location={prism_location()}"])
        >>> config = parse_config({
        ...     "name": "shop", "event_time_field": "ts",
        ...     "window": {"size": "60s", "period": "60s"},
        ...     "features": [{"name": "country", "kind": "categorical",
        ...                   "categories": ["de", "fr"]}]})
        >>> baseline = baseline_from_events(config, [{"country": "de"}, {"country": "fr"}] * 50)
        >>> events = [{"ts": 1_704_067_260 + i, "country": "de"} for i in range(20)]
        >>> with beam.Pipeline(options=options) as pipeline:
        ...     outputs = pipeline | beam.Create(events) | SlidingKLDivergence(config, baseline)
        ...     _ = outputs["reports"] | beam.Map(
        ...         lambda r: print(r.window_start, r.count, f"{r.kl_bits:.3f} bits"))
        2024-01-01 00:01:00+00:00 20 1.007 bits
    """

    def __init__(
        self,
        config: PipelineConfig,
        baseline: Baseline,
        *,
        event_time: EventTime = "field",
        baseline_updates: BaselineUpdates | None = None,
        max_batch: int = MAX_BATCH,
        format: Format = "json",
        schema_registry: SchemaRegistrySpec | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if event_time not in ("field", "timestamp"):
            raise ValueError(f"event_time must be 'field' or 'timestamp', not {event_time!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self._event_time = event_time
        self._max_batch = max_batch
        self._config = config
        self._format = format
        self._registry = _registry_spec(format, schema_registry)
        # Built now: a baseline that does not fit the config fails at construction.
        self._windows = SlidingKLFromBatches(config, baseline, baseline_updates)

    @no_annotations  # Beam takes no dict of PCollections as an output hint (it warns)
    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        batches = (
            events
            # Batches span a bundle's elements whatever window they were in: one window for all.
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "Batch"
            >> beam.ParDo(
                _ToEventBatches(
                    self._config,
                    self._event_time,
                    self._max_batch,
                    self.label,
                    (self._format, self._registry),
                )
            ).with_output_types(EventBatch)
        )
        # The steps are applied here, not nested one level deeper: their labels are those of
        # `kldrift run` (SlidingKLDivergence/Bin, .../Score).
        outputs = self._windows.expand(batches)
        # Score emits a list per block of keys and window, of msgspec records; here, one pydantic
        # model per element (each keeps its list's timestamp, window and pane).
        return {
            REPORTS: outputs[REPORTS]
            | "Reports" >> beam.FlatMap(_each).with_output_types(DriftReport),
            SUMMARIES: outputs[SUMMARIES]
            | "Summaries" >> beam.FlatMap(_each).with_output_types(WindowSummary),
            DEAD_LETTERS: outputs[DEAD_LETTERS],
        }


class _ToEventBatches(beam.DoFn):
    """Events of one bundle -> EventBatches of at most `max_batch`, each stamped at its earliest
    event time (each event's own stamp is later: no window is assigned too early)."""

    def __init__(
        self,
        config: PipelineConfig,
        event_time: EventTime,
        max_batch: int,
        source: str,
        record_format: tuple[Format, SchemaRegistrySpec | None] = ("json", None),
    ) -> None:
        self._config = config
        self._from_timestamp = event_time == "timestamp"
        self._max_batch = max_batch
        self._source = source
        self._record_format = record_format

    def setup(self) -> None:
        self._decoder = EventDecoder(self._config)
        self._format = record_format(*self._record_format)

    def start_bundle(self) -> None:
        self._values: list[Any] = []
        self._times_us: list[int] = []

    def process(
        self, element: Any, timestamp: Any = beam.DoFn.TimestampParam
    ) -> Iterator[WindowedValue]:
        self._values.append(element)
        self._times_us.append(timestamp.micros)
        if len(self._values) >= self._max_batch:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        values, self._values = self._values, []
        times_us, self._times_us = self._times_us, []
        if not values:
            return
        batch = self._decode(values, times_us if self._from_timestamp else None)
        # A batch of dead letters only keeps its elements' earliest timestamp.
        stamp = int(batch.event_time_us.min()) if len(batch) else min(times_us)
        yield WindowedValue(batch, Timestamp(micros=stamp), (GlobalWindow(),))

    def _decode(self, values: list[Any], times_us: list[int] | None) -> EventBatch:
        if self._format is not None:  # wire-format bytes; RegistryUnreachable fails the bundle
            records = RecordBatch(values, [-1] * len(values), self._source)
            parsed, problems = self._format.decode(values)
            return self._decoder.decode_parsed(records, parsed, problems, times_us)
        events = RecordBatch([_as_event(v) for v in values], [-1] * len(values), self._source)
        if times_us is None:
            return self._decoder.decode_columns(events)
        return self._decoder.decode(events, times_us)


def _each(records: list[Any]) -> list[Any]:
    """A block's records as the pydantic models (the library's contract)."""
    return [record.to_model() for record in records]


def _registry_spec(
    fmt: str, registry: SchemaRegistrySpec | Mapping[str, Any] | None
) -> SchemaRegistrySpec | None:
    """The registry of a non-JSON format, checked now: a bad argument fails at construction."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "json":
        return None
    if registry is None:
        raise ValueError(f"format {fmt!r} needs schema_registry (where its writer schemas are)")
    if isinstance(registry, SchemaRegistrySpec):
        return registry
    return parse_schema_registry(dict(registry))


def _as_event(element: Any) -> Any:
    """JSON text as UTF-8 bytes (the decoder's fast path), a beam.Row (or a schema'd NamedTuple)
    as a dict; anything else as it is: the decoder says what is not an event."""
    if type(element) is str:
        try:
            return element.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: json.loads reads the text as it is
            return element
    return _as_dict(element)


def _as_dict(value: Any) -> Any:
    """A Row, nested Rows too, as dicts; any other value as it is."""
    if isinstance(value, bytes | str | dict):
        return value
    as_dict = getattr(value, "as_dict", None) or getattr(value, "_asdict", None)
    if not callable(as_dict):
        return value
    return {name: _as_dict(field) for name, field in as_dict().items()}


__all__ = ["DEAD_LETTERS", "REPORTS", "SUMMARIES", "SlidingKLDivergence"]
