"""kldrift: streaming KL-divergence drift detection for Apache Beam, reported in bits.

The library's front door::

    from kldrift import SlidingKLDivergence, load_config, read_baseline

    config = load_config("config.yaml")
    baseline = read_baseline("baseline.json")
    outputs = events | SlidingKLDivergence(config, baseline)
    outputs["reports"] | WriteReportsToKafka("broker:9092", "drift-reports")

Names are imported on first use, so `import kldrift.schemas` (a report consumer) loads no Beam.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "SlidingKLDivergence": "kldrift.transforms.sliding_kl",
    "REPORTS": "kldrift.transforms.sliding_kl",
    "DEAD_LETTERS": "kldrift.transforms.sliding_kl",
    "WriteReportsToKafka": "kldrift.io.kafka_sink",
    "WriteDeadLettersToKafka": "kldrift.io.kafka_sink",
    "PipelineConfig": "kldrift.schemas.config",
    "ConfigError": "kldrift.schemas.config",
    "load_config": "kldrift.schemas.config",
    "parse_config": "kldrift.schemas.config",
    "Baseline": "kldrift.schemas.baseline",
    "BaselineError": "kldrift.schemas.baseline",
    "BaselineMismatch": "kldrift.binning",
    "read_baseline": "kldrift.io.baselines",
    "baseline_from_events": "kldrift.training",
    "DriftReport": "kldrift.schemas.report",
    "DeadLetter": "kldrift.events",
}

__all__ = [
    "DEAD_LETTERS",
    "REPORTS",
    "Baseline",
    "BaselineError",
    "BaselineMismatch",
    "ConfigError",
    "DeadLetter",
    "DriftReport",
    "PipelineConfig",
    "SlidingKLDivergence",
    "WriteDeadLettersToKafka",
    "WriteReportsToKafka",
    "__version__",
    "baseline_from_events",
    "load_config",
    "parse_config",
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
    from kldrift.binning import BaselineMismatch
    from kldrift.events import DeadLetter
    from kldrift.io.baselines import read_baseline
    from kldrift.io.kafka_sink import WriteDeadLettersToKafka, WriteReportsToKafka
    from kldrift.schemas.baseline import Baseline, BaselineError
    from kldrift.schemas.config import ConfigError, PipelineConfig, load_config, parse_config
    from kldrift.schemas.report import DriftReport
    from kldrift.training import baseline_from_events
    from kldrift.transforms.sliding_kl import DEAD_LETTERS, REPORTS, SlidingKLDivergence
