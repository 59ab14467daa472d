"""The pipeline config a user writes (YAML or JSON): event fields, windows, features, drift rule, Kafka."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kldrift.exceptions import ConfigError as ConfigError
from kldrift.schemas.durations import Duration

OTHER_CATEGORY = "__other__"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WindowSpec(_Frozen):
    """Sliding windows `[k*period, k*period + size)` in event time."""

    size: Duration = Field(description="window length")
    period: Duration = Field(description="how often a window starts (the slide)")
    allowed_lateness: Duration = Field(
        default=0.0, description="how long after a window closes late events still revise it"
    )

    @field_validator("size", "period")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        if not math.isclose(value * 1000, round(value * 1000), abs_tol=1e-9):
            raise ValueError("must be a whole number of milliseconds")
        return value

    @model_validator(mode="after")
    def _size_multiple_of_period(self) -> WindowSpec:
        ratio = self.size / self.period
        if not math.isclose(ratio, round(ratio), abs_tol=1e-9):
            raise ValueError(
                f"window.size ({self.size:g}s) must be a whole multiple of "
                f"window.period ({self.period:g}s)"
            )
        return self

    @property
    def size_us(self) -> int:
        return round(self.size * 1_000_000)

    @property
    def period_us(self) -> int:
        return round(self.period * 1_000_000)

    @property
    def allowed_lateness_us(self) -> int:
        return round(self.allowed_lateness * 1_000_000)

    @property
    def panes_per_window(self) -> int:
        return self.size_us // self.period_us


def check_edges(edges: list[float]) -> list[float]:
    """Bin edges as every binning needs them (config and baseline alike); ValueError if not."""
    if not edges:
        raise ValueError("needs at least one edge")
    if any(not math.isfinite(e) for e in edges):
        raise ValueError("edges must be finite numbers (the outer bins already reach ±inf)")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError("edges must be strictly increasing")
    return edges


def check_categories(categories: list[str]) -> list[str]:
    """Categories as every binning needs them (config and baseline alike); ValueError if not."""
    if not categories:
        raise ValueError("needs at least one category")
    if len(set(categories)) != len(categories):
        raise ValueError("categories must be unique")
    if OTHER_CATEGORY in categories:
        raise ValueError(f"{OTHER_CATEGORY!r} is reserved for values not listed")
    return categories


class NumericFeature(_Frozen):
    """A numeric feature binned by edges: (-inf,e0), [e0,e1), ..., [e(m-1), +inf)."""

    name: str = Field(min_length=1, description="field name; a dotted path reads a nested field")
    kind: Literal["numeric"] = Field(description="numeric: binned by edges")
    edges: list[float] | None = Field(default=None, description="strictly increasing bin edges")
    bins: int | None = Field(
        default=None, ge=2, le=100_000, description="learn bins-1 quantile edges from the baseline"
    )

    @field_validator("edges")
    @classmethod
    def _edges_increasing(cls, edges: list[float] | None) -> list[float] | None:
        return None if edges is None else check_edges(edges)

    @model_validator(mode="after")
    def _edges_or_bins(self) -> NumericFeature:
        if (self.edges is None) == (self.bins is None):
            raise ValueError(f"feature {self.name!r}: give exactly one of 'edges' or 'bins'")
        return self


class CategoricalFeature(_Frozen):
    """A categorical feature: the listed categories in order, then one `__other__` bin."""

    name: str = Field(min_length=1, description="field name; a dotted path reads a nested field")
    kind: Literal["categorical"] = Field(description="categorical: listed categories + __other__")
    categories: list[str] | None = Field(default=None, description="categories, in bin order")
    top_k: int | None = Field(
        default=None, ge=1, le=100_000, description="learn the k most frequent from the baseline"
    )

    @field_validator("categories")
    @classmethod
    def _unique(cls, categories: list[str] | None) -> list[str] | None:
        return None if categories is None else check_categories(categories)

    @model_validator(mode="after")
    def _categories_or_top_k(self) -> CategoricalFeature:
        if (self.categories is None) == (self.top_k is None):
            raise ValueError(f"feature {self.name!r}: give exactly one of 'categories' or 'top_k'")
        return self


MAX_JOINT_CELLS = 100_000
"""The most cells a joint may have (as many as a feature's bins may be)."""


def _most_bins(spec: NumericFeature | CategoricalFeature) -> int:
    """The most bins a plain feature can have: its edges + 1, `bins`, its categories + 1
    (`__other__`), or `top_k` + 1."""
    if isinstance(spec, NumericFeature):
        return len(spec.edges) + 1 if spec.edges is not None else spec.bins or 0
    return len(spec.categories) + 1 if spec.categories is not None else (spec.top_k or 0) + 1


class JointFeature(_Frozen):
    """Two features of the config binned together: B1 x B2 cells, one per pair of their bins (the
    first feature's bin varies slowest). An event missing (or invalid) in either part is the
    joint's missing (invalid). Drift in how two features go together shows here even when
    neither feature's own distribution moves."""

    name: str = Field(min_length=1, description="the joint's name (reports' `feature`)")
    kind: Literal["joint"] = Field(description="joint: the product of two features' bins")
    of: list[str] = Field(
        min_length=2,
        max_length=2,
        description="the names of two numeric or categorical features of this config",
    )

    @field_validator("of")
    @classmethod
    def _two_different(cls, of: list[str]) -> list[str]:
        if of[0] == of[1]:
            raise ValueError(f"a joint needs two different features, not {of[0]!r} twice")
        return of


FeatureSpec = Annotated[
    NumericFeature | CategoricalFeature | JointFeature, Field(discriminator="kind")
]


class DriftSpec(_Frozen):
    """When a window counts as drifted: debiased KL above the threshold and a significant G-test."""

    smoothing: float = Field(
        default=0.5, ge=0, description="pseudo-count added to every baseline bin (Q's smoothing)"
    )
    threshold_bits: float = Field(default=0.05, ge=0, description="debiased KL threshold, bits")
    significance: float = Field(default=0.01, gt=0, le=1, description="G-test p-value threshold")
    decision: Literal["estimate", "confident"] = Field(
        default="estimate",
        description="what sets `drift`: estimate = debiased KL > threshold and p_value < "
        "significance; confident = p_value_above_threshold < significance (see README)",
    )


class SchemaRegistrySpec(_Frozen):
    """A Confluent-compatible Schema Registry that holds the writer schemas of Avro and Protobuf
    events (Confluent, Apicurio's /apis/ccompat/v7, Redpanda, Karapace)."""

    url: str = Field(
        pattern=r"^https?://[^/\s]+",
        description="the registry's base URL (e.g. http://127.0.0.1:8081, or an Apicurio "
        "registry's http://HOST:PORT/apis/ccompat/v7)",
    )
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra confluent-kafka SchemaRegistryClient settings (basic.auth.user.info, "
        "basic.auth.credentials.source, bearer.auth.*, ssl.ca.location, ssl.certificate.location, "
        "ssl.key.location, timeout, ...); secrets are masked in logs",
    )

    @field_validator("client")
    @classmethod
    def _not_url(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "url" in value:
            raise ValueError("give the registry's URL as kafka.schema_registry.url")
        return value


class KafkaSpec(_Frozen):
    """Where events come from and reports go, and every client setting passed through."""

    bootstrap_servers: str = Field(min_length=1, description="host:port[,host:port...]")
    input_topic: str = Field(
        min_length=1, description="events, one per message (a JSON object, or see `format`)"
    )
    format: Literal["json", "avro", "protobuf"] = Field(
        default="json",
        description="how input_topic's values are written: JSON objects, or Avro or Protobuf in "
        "the Confluent wire format (magic byte 0, 4-byte schema id) with schema_registry",
    )
    schema_registry: SchemaRegistrySpec | None = Field(
        default=None, description="where the writer schemas of avro/protobuf events are"
    )
    output_topic: str = Field(min_length=1, description="drift reports (JSON)")
    dead_letter_topic: str = Field(
        min_length=1, description="records not binned: raw value, `reason` header"
    )
    group_id: str | None = Field(default=None, description="consumer group (default: kldrift.NAME)")
    start_from: Literal["committed", "earliest", "latest", "timestamp"] = Field(
        default="committed",
        description="where reading starts: the group's committed offsets (earliest if none), "
        "earliest, latest, or start_timestamp",
    )
    start_timestamp: float | None = Field(
        default=None, description="epoch seconds, with start_from: timestamp"
    )
    commit_offsets: bool = Field(
        default=True, description="commit read offsets to the group after each bundle"
    )
    create_topics: bool = Field(default=True, description="create missing topics at start")
    max_delay: Duration = Field(
        default=0.0,
        description="watermark = newest event time seen minus this (out-of-order bound)",
    )
    idle_timeout: Duration = Field(
        default=5.0,
        description="a partition with no new records for this long lets its watermark follow "
        "wall-clock time minus (idle_timeout + max_delay)",
    )
    max_future: Duration = Field(
        default=3600.0,
        gt=0,
        description="an event time more than this ahead of the reader's wall clock is "
        "dead-lettered (`future_event_time`) and never moves the watermark: a producer's bad "
        "clock cannot close every window early",
    )
    poll_max_records: int = Field(default=2000, ge=1, description="records per poll (a batch)")
    partition_discovery: Duration = Field(
        default=5.0,
        gt=0,
        description="how often a running job looks for partitions added to input_topic; a new "
        "one is read from its beginning, whatever start_from says",
    )
    readers: int = Field(
        default=1,
        ge=1,
        description="parallel readers sharing the partitions; keep 1 on Prism unless `kldrift run "
        "--worker-processes` (see README)",
    )
    outage_timeout: Duration = Field(
        default=300.0,
        gt=0,
        description="how long the job rides out an unreachable cluster (reads, writes and the "
        "baseline watcher retry with backoff; the watermark waits) before it fails",
    )
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra kafka-python settings (security_protocol, sasl_mechanism, "
        "sasl_plain_username, sasl_plain_password, ssl_cafile, client_id, ...)",
    )

    @model_validator(mode="after")
    def _timestamp_given(self) -> KafkaSpec:
        if self.start_from == "timestamp" and self.start_timestamp is None:
            raise ValueError("kafka.start_timestamp is required with start_from: timestamp")
        return self

    @model_validator(mode="after")
    def _registry_given(self) -> KafkaSpec:
        if self.format != "json" and self.schema_registry is None:
            raise ValueError(f"kafka.schema_registry is required with format: {self.format}")
        return self


DEFAULT_MIN_EVENT_TIME = "2000-01-01T00:00:00Z"
"""No real event is older; an unset device clock (1970) or a garbled one (year 5) is."""

_YEAR_1_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_YEAR_10000_US = 253_402_300_800_000_000  # 10000-01-01T00:00:00Z


def datetime_us(moment: datetime) -> int:
    """Microseconds since the epoch, exact; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_time_floor_us(value: str | float) -> int:
    """`min_event_time` (RFC 3339 text, naive = UTC, or epoch seconds) in microseconds since the
    epoch; ValueError naming what is wrong."""
    if isinstance(value, str):
        try:
            floor_us = datetime_us(datetime.fromisoformat(value.strip().replace("z", "Z")))
        except ValueError:
            raise ValueError(f"not RFC 3339 text or epoch seconds: {value!r}") from None
    elif math.isfinite(value):
        floor_us = math.floor(value * 1_000_000)
    else:
        raise ValueError(f"not RFC 3339 text or epoch seconds: {value!r}")
    if not _YEAR_1_US <= floor_us < _YEAR_10000_US:
        raise ValueError(f"{value!r} is outside years 1-9999 (UTC)")
    return floor_us


class PipelineConfig(_Frozen):
    """One kldrift job."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="pipeline name")
    event_time_field: str = Field(min_length=1, description="field holding the event time")
    event_time_unit: Literal["s", "ms"] = Field(
        default="s", description="unit of a numeric event time (RFC 3339 text is also accepted)"
    )
    key_field: str | None = Field(
        default=None, description="report drift separately per value of this field"
    )
    min_event_time: str | float = Field(
        default=DEFAULT_MIN_EVENT_TIME,
        description="RFC 3339 text or epoch seconds: an earlier event time is dead-lettered "
        "(`past_event_time`), so a producer clock far behind (unset: 1970) opens no window",
    )
    window: WindowSpec = Field(description="sliding windows in event time (below)")
    features: list[FeatureSpec] = Field(
        min_length=1, description="the features to watch (numeric, categorical or joint, below)"
    )
    drift: DriftSpec = Field(default_factory=DriftSpec, description="the drift rule (below)")
    baseline: str | None = Field(
        default=None,
        description="the baseline (kldrift baseline): a file, a gs:// s3:// hdfs:// URL, or "
        "kafka://TOPIC (newest record; a running job picks up newer ones)",
    )
    baseline_refresh: Duration = Field(
        default=30.0,
        gt=0,
        description="how often a running job checks a kafka:// baseline for a newer one",
    )
    kafka: KafkaSpec | None = Field(default=None, description="Kafka in and out (below)")

    @field_validator("min_event_time", mode="before")
    @classmethod
    def _min_event_time_a_time(cls, value: Any) -> Any:
        if isinstance(value, date):  # YAML reads an unquoted 2000-01-01T00:00:00Z as a datetime
            value = value.isoformat()
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"not RFC 3339 text or epoch seconds: {value!r}")
        event_time_floor_us(value)
        return value

    @property
    def min_event_time_us(self) -> int:
        """The earliest event time accepted, in microseconds since the epoch."""
        return event_time_floor_us(self.min_event_time)

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[FeatureSpec]) -> list[FeatureSpec]:
        seen: set[str] = set()
        for feature in features:
            if feature.name in seen:
                raise ValueError(f"duplicate feature {feature.name!r}")
            seen.add(feature.name)
        plain = {f.name: f for f in features if not isinstance(f, JointFeature)}
        for feature in features:
            if isinstance(feature, JointFeature):
                for part in feature.of:
                    if part not in plain:
                        raise ValueError(
                            f"joint {feature.name!r}: {part!r} is not a numeric or categorical "
                            "feature of this config (list it under features too)"
                        )
                first, second = (_most_bins(plain[part]) for part in feature.of)
                if first * second > MAX_JOINT_CELLS:
                    raise ValueError(
                        f"joint {feature.name!r}: up to {first} x {second} = {first * second:,} "
                        f"cells, more than {MAX_JOINT_CELLS:,}: give its parts fewer bins"
                    )
        return features

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


def _format_validation_error(source: str, err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    return f"{source}: " + "; ".join(problems)


def parse_config(data: Any, source: str = "config") -> PipelineConfig:
    """Validate a config mapping; raise ConfigError naming every bad field.

    Examples
    --------
    >>> import yaml
    >>> config = parse_config(yaml.safe_load('''
    ... name: checkout-model
    ... event_time_field: ts
    ... window: {size: 10m, period: 1m}
    ... features:
    ...   - {name: latency_ms, kind: numeric, edges: [0, 10, 100]}
    ... '''))
    >>> config.window.size, config.window.period  # seconds
    (600.0, 60.0)
    >>> config.drift.threshold_bits, config.kafka is None
    (0.05, True)
    >>> bad = {**config.model_dump(), "window": {"size": "90s", "period": "1m"}}
    >>> parse_config(bad, "job.yaml")
    Traceback (most recent call last):
    ...
    kldrift.exceptions.ConfigError: job.yaml: window: window.size (90s) must be a whole multiple of window.period (60s)
    """
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def parse_kafka_spec(data: Any, source: str = "kafka") -> KafkaSpec:
    """Validate a `kafka` mapping alone; raise ConfigError naming every bad field."""
    try:
        return KafkaSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def parse_schema_registry(data: Any, source: str = "schema_registry") -> SchemaRegistrySpec:
    """Validate a `schema_registry` mapping alone; raise ConfigError naming every bad field."""
    try:
        return SchemaRegistrySpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None


def with_kafka_overrides(config: PipelineConfig, overrides: Mapping[str, Any]) -> PipelineConfig:
    """`config` with `kafka.<name>` replaced by `overrides` (e.g. template parameters), validated
    again."""
    if not overrides:
        return config
    data = config.model_dump(mode="json")
    data["kafka"] = {**(data.get("kafka") or {}), **overrides}
    return parse_config(data, "kafka overrides")


def load_config(path: str | Path) -> PipelineConfig:
    """Load a YAML or JSON config file. A relative `baseline` path is resolved against the file.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "job.yaml")
    ...     _ = path.write_text(
    ...         "name: checkout-model\\n"
    ...         "event_time_field: ts\\n"
    ...         "window: {size: 10m, period: 1m}\\n"
    ...         "features: [{name: country, kind: categorical, categories: [US, DE]}]\\n"
    ...         "baseline: baseline.json\\n"
    ...     )
    ...     config = load_config(path)
    ...     config.baseline == str(Path(folder, "baseline.json").resolve())
    True
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of fields")
    baseline = data.get("baseline")
    if isinstance(baseline, str) and "://" not in baseline and not Path(baseline).is_absolute():
        data = {**data, "baseline": str((path.parent / baseline).resolve())}
    return parse_config(data, str(path))


def config_json_schema() -> dict[str, Any]:
    return PipelineConfig.model_json_schema()
