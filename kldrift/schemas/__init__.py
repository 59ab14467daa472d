"""Pydantic models: pipeline config, baseline file, drift report (the wire contract). No Beam here."""

from kldrift.schemas.baseline import Baseline, FeatureBaseline
from kldrift.schemas.config import (
    CategoricalFeature,
    DriftSpec,
    FeatureSpec,
    JointFeature,
    KafkaSpec,
    NumericFeature,
    PipelineConfig,
    WindowSpec,
    load_config,
)
from kldrift.schemas.report import SCHEMA_VERSION, DriftReport, TopBinReport

__all__ = [
    "SCHEMA_VERSION",
    "Baseline",
    "CategoricalFeature",
    "DriftReport",
    "DriftSpec",
    "FeatureBaseline",
    "FeatureSpec",
    "JointFeature",
    "KafkaSpec",
    "NumericFeature",
    "PipelineConfig",
    "TopBinReport",
    "WindowSpec",
    "load_config",
]
