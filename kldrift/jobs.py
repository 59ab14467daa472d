"""Loading a job: its config (with overrides) and its baseline, checked against each other; what
`kldrift` commands and the Dataflow launcher start from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kldrift.errors import UserError, user_errors
from kldrift.io.baselines import read_baseline
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig, load_config, with_kafka_overrides


def load_job(
    config_path: str,
    baseline_path: str | None,
    kafka_overrides: Mapping[str, Any] | None = None,
) -> tuple[PipelineConfig, Baseline]:
    """The config (with --baseline and Kafka overrides applied) and its baseline, checked."""
    with user_errors():
        config = with_kafka_overrides(load_config(config_path), kafka_overrides or {})
        path = baseline_path or config.baseline
        if path is None:
            raise UserError(f"{config_path}: no baseline: set `baseline:` or pass --baseline")
        if baseline_path is not None:  # --baseline overrides the config's, also for watching
            config = config.model_copy(update={"baseline": baseline_path})
        baseline = read_baseline(path, config.kafka)
        from kldrift.binning import resolve_bins

        resolve_bins(config, baseline)
    return config, baseline
