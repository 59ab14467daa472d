"""kldrift: streaming KL-divergence drift detection for Apache Beam, reported in bits.

The library's front door: a config, a baseline, and the composite applied to your events. A
pipeline built here (``pipeline.run()`` would start it and write to the broker):

>>> import apache_beam as beam
>>> from kldrift import SlidingKLDivergence, WriteReportsToKafka, baseline_from_events, parse_config
>>> config = parse_config({
...     "name": "shop", "event_time_field": "ts",
...     "window": {"size": "10m", "period": "1m"},
...     "features": [{"name": "latency_ms", "kind": "numeric", "edges": [10, 100]}]})
>>> baseline = baseline_from_events(config, [{"latency_ms": 5}, {"latency_ms": 50}] * 50)
>>> pipeline = beam.Pipeline()
>>> events = pipeline | beam.Create([b'{"ts": 1704067200, "latency_ms": 7}'])
>>> outputs = events | SlidingKLDivergence(config, baseline)
>>> records = (outputs["reports"], outputs["summaries"]) | beam.Flatten()
>>> _ = records | WriteReportsToKafka("broker:9092", "drift-reports")
>>> sorted(outputs)
['dead_letters', 'reports', 'summaries']

From files: ``load_config("config.yaml")`` and ``read_baseline("baseline.json")`` (what
``kldrift baseline`` wrote; a gs:// or s3:// URL, or kafka://TOPIC, reads as well). The errors
a user can fix are one hierarchy: ``except kldrift.KldriftError`` catches them all.

Names are imported on first use, so `import kldrift.schemas` (a report consumer) loads no Beam.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXCEPTIONS = (
    "KldriftError",
    "ConfigError",
    "BaselineError",
    "BaselineMismatch",
    "InputNotFound",
    "UnreadableInput",
    "KafkaSetupError",
    "ResumeMismatch",
    "KafkaOutageError",
    "TopicMissingError",
    "SchemaRegistryError",
    "FlinkSetupError",
    "PrismNotInstalled",
    "UserError",
)
"""Every error a user can fix, one hierarchy under KldriftError (kldrift.exceptions)."""

_EXPORTS = {
    "SlidingKLDivergence": "kldrift.transforms.sliding_kl",
    "REPORTS": "kldrift.transforms.sliding_kl",
    "SUMMARIES": "kldrift.transforms.sliding_kl",
    "DEAD_LETTERS": "kldrift.transforms.sliding_kl",
    "WriteReportsToKafka": "kldrift.io.kafka_sink",
    "WriteDeadLettersToKafka": "kldrift.io.kafka_sink",
    "PipelineConfig": "kldrift.schemas.config",
    "load_config": "kldrift.schemas.config",
    "parse_config": "kldrift.schemas.config",
    "Baseline": "kldrift.schemas.baseline",
    "read_baseline": "kldrift.io.baselines",
    "baseline_from_events": "kldrift.training",
    "DriftReport": "kldrift.schemas.report",
    "WindowSummary": "kldrift.schemas.report",
    "parse_report_record": "kldrift.schemas.report",
    "DeadLetter": "kldrift.events",
    "prism_location": "kldrift.pipeline.prism",
    **dict.fromkeys(_EXCEPTIONS, "kldrift.exceptions"),
}

__all__ = [
    "DEAD_LETTERS",
    "REPORTS",
    "SUMMARIES",
    "Baseline",
    "BaselineError",
    "BaselineMismatch",
    "ConfigError",
    "DeadLetter",
    "DriftReport",
    "FlinkSetupError",
    "InputNotFound",
    "KafkaOutageError",
    "KafkaSetupError",
    "KldriftError",
    "PipelineConfig",
    "PrismNotInstalled",
    "ResumeMismatch",
    "SchemaRegistryError",
    "SlidingKLDivergence",
    "TopicMissingError",
    "UnreadableInput",
    "UserError",
    "WindowSummary",
    "WriteDeadLettersToKafka",
    "WriteReportsToKafka",
    "__version__",
    "baseline_from_events",
    "load_config",
    "parse_config",
    "parse_report_record",
    "prism_location",
    "read_baseline",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kldrift' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from kldrift.events import DeadLetter
    from kldrift.exceptions import (
        BaselineError,
        BaselineMismatch,
        ConfigError,
        FlinkSetupError,
        InputNotFound,
        KafkaOutageError,
        KafkaSetupError,
        KldriftError,
        PrismNotInstalled,
        ResumeMismatch,
        SchemaRegistryError,
        TopicMissingError,
        UnreadableInput,
        UserError,
    )
    from kldrift.io.baselines import read_baseline
    from kldrift.io.kafka_sink import WriteDeadLettersToKafka, WriteReportsToKafka
    from kldrift.pipeline.prism import prism_location
    from kldrift.schemas.baseline import Baseline
    from kldrift.schemas.config import PipelineConfig, load_config, parse_config
    from kldrift.schemas.report import DriftReport, WindowSummary, parse_report_record
    from kldrift.training import baseline_from_events
    from kldrift.transforms.sliding_kl import DEAD_LETTERS, REPORTS, SUMMARIES, SlidingKLDivergence
