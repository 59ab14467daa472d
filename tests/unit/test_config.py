"""The pipeline config a user writes: loading, durations, every refusal message, JSON Schema, CLI."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kldrift.schemas.config import (
    CategoricalFeature,
    ConfigError,
    NumericFeature,
    config_json_schema,
    load_config,
    parse_config,
)
from kldrift.schemas.durations import parse_duration

EXAMPLE_YAML = """\
name: checkout-model
event_time_field: ts
key_field: null
window: {size: 10m, period: 1m, allowed_lateness: 2m}
features:
  - {name: latency_ms, kind: numeric, edges: [0, 5, 10, 20, 50, 100, 250, 1000]}
  - {name: payload.country, kind: categorical, categories: [US, DE, FR, GB]}
  - {name: amount, kind: numeric, bins: 20}
  - {name: device, kind: categorical, top_k: 50}
drift: {smoothing: 0.5, threshold_bits: 0.05, significance: 0.01}
baseline: baseline.json
kafka: {bootstrap_servers: "127.0.0.1:9092", input_topic: events, output_topic: kldrift.drift, dead_letter_topic: kldrift.dead-letter}
"""

MINIMAL: dict[str, Any] = {
    "name": "m",
    "event_time_field": "ts",
    "window": {"size": "10m", "period": "1m"},
    "features": [{"name": "latency_ms", "kind": "numeric", "edges": [0, 5, 10]}],
}

KAFKA = {
    "bootstrap_servers": "127.0.0.1:9092",
    "input_topic": "events",
    "output_topic": "drift",
    "dead_letter_topic": "dead",
}


def _example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE_YAML)


def _write(tmp_path: Path, data: dict[str, Any] | str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(MINIMAL)
    data.update(changes)
    return data


# --- loading the example ---------------------------------------------------------------------


def test_example_config_loads_with_every_section(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, EXAMPLE_YAML))

    assert config.name == "checkout-model"
    assert config.key_field is None
    # 10m = 600 s, 1m = 60 s, 2m = 120 s
    assert (config.window.size, config.window.period, config.window.allowed_lateness) == (
        600.0,
        60.0,
        120.0,
    )
    assert config.window.panes_per_window == 10  # 600 / 60
    latency, country, amount, device = config.features
    assert isinstance(latency, NumericFeature)
    assert latency.edges == [0, 5, 10, 20, 50, 100, 250, 1000]
    assert isinstance(country, CategoricalFeature)
    assert country.categories == ["US", "DE", "FR", "GB"]
    assert isinstance(amount, NumericFeature) and amount.bins == 20 and amount.edges is None
    assert isinstance(device, CategoricalFeature) and device.top_k == 50
    assert config.drift.threshold_bits == 0.05
    assert config.kafka is not None
    assert config.kafka.output_topic == "kldrift.drift"
    assert config.kafka.start_from == "committed"


def test_json_config_file_loads_like_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_example()))

    assert load_config(path) == load_config(_write(tmp_path, EXAMPLE_YAML))


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),  # 10 * 60
        ("1h", 3600.0),  # 60 * 60
        ("2d", 172_800.0),  # 2 * 86400
        ("500ms", 0.5),
        ("1.5m", 90.0),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_duration_parses_to_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


def test_window_durations_in_a_config_are_seconds() -> None:
    config = parse_config(_with(window={"size": 90, "period": "500ms", "allowed_lateness": "1h"}))

    assert config.window.size == 90.0
    assert config.window.period == 0.5
    assert config.window.allowed_lateness == 3600.0
    assert config.window.panes_per_window == 180  # 90 / 0.5


@pytest.mark.parametrize("bad", ["ten minutes", "10", "10 min", "-1m", "1e3s", "", True])
def test_bad_duration_text_is_refused_naming_the_field(bad: object) -> None:
    message = _refusal(_with(window={"size": bad, "period": "1m"}))

    assert "window.size" in message
    assert "duration" in message


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_non_finite_duration_is_a_config_error(bad: float) -> None:
    # YAML `.inf` / `.nan` reach the model as floats; they must be refused like any bad value.
    message = _refusal(_with(window={"size": "10m", "period": "1m", "allowed_lateness": bad}))

    assert "window.allowed_lateness" in message


# --- refusals --------------------------------------------------------------------------------


def test_window_size_not_a_multiple_of_period_is_refused() -> None:
    message = _refusal(_with(window={"size": "10m", "period": "3m"}))

    assert message.startswith("config: window:")
    assert "600s" in message and "180s" in message
    assert "multiple" in message


def test_window_period_zero_is_refused() -> None:
    message = _refusal(_with(window={"size": "10m", "period": 0}))

    assert "window.period" in message and "greater than 0" in message


@pytest.mark.parametrize("edges", [[0, 5, 5], [0, 10, 5]])
def test_edges_not_strictly_increasing_are_refused(edges: list[float]) -> None:
    message = _refusal(_with(features=[{"name": "x", "kind": "numeric", "edges": edges}]))

    assert "features.0.numeric.edges" in message
    assert "strictly increasing" in message


def test_duplicate_feature_name_is_refused() -> None:
    features = [
        {"name": "x", "kind": "numeric", "edges": [1]},
        {"name": "x", "kind": "categorical", "top_k": 3},
    ]
    message = _refusal(_with(features=features))

    assert "features" in message and "duplicate feature 'x'" in message


def test_unknown_top_level_key_is_refused() -> None:
    message = _refusal(_with(treshold=0.1))

    assert "treshold" in message and "Extra inputs are not permitted" in message


def test_unknown_key_inside_a_feature_is_refused() -> None:
    feature = {"name": "x", "kind": "numeric", "edges": [1], "egdes": [2]}
    message = _refusal(_with(features=[feature]))

    assert "features.0.numeric.egdes" in message and "Extra inputs are not permitted" in message


def test_both_edges_and_bins_is_refused() -> None:
    feature = {"name": "x", "kind": "numeric", "edges": [1, 2], "bins": 10}
    message = _refusal(_with(features=[feature]))

    assert "feature 'x'" in message and "exactly one of 'edges' or 'bins'" in message


def test_neither_edges_nor_bins_is_refused() -> None:
    message = _refusal(_with(features=[{"name": "x", "kind": "numeric"}]))

    assert "feature 'x'" in message and "exactly one of 'edges' or 'bins'" in message


def test_neither_categories_nor_top_k_is_refused() -> None:
    message = _refusal(_with(features=[{"name": "c", "kind": "categorical"}]))

    assert "feature 'c'" in message and "exactly one of 'categories' or 'top_k'" in message


def test_duplicate_categories_are_refused() -> None:
    feature = {"name": "c", "kind": "categorical", "categories": ["US", "DE", "US"]}
    message = _refusal(_with(features=[feature]))

    assert "features.0.categorical.categories" in message and "unique" in message


def test_reserved_other_category_is_refused() -> None:
    feature = {"name": "c", "kind": "categorical", "categories": ["US", "__other__"]}
    message = _refusal(_with(features=[feature]))

    assert "features.0.categorical.categories" in message and "'__other__' is reserved" in message


def test_kafka_start_from_timestamp_needs_start_timestamp() -> None:
    message = _refusal(_with(kafka={**KAFKA, "start_from": "timestamp"}))

    assert "kafka.start_timestamp is required" in message

    config = parse_config(
        _with(kafka={**KAFKA, "start_from": "timestamp", "start_timestamp": 1_700_000_000})
    )
    assert config.kafka is not None and config.kafka.start_timestamp == 1_700_000_000.0


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("yesterday", "not RFC 3339 text or epoch seconds: 'yesterday'"),
        ("2024-13-01T00:00:00Z", "not RFC 3339 text or epoch seconds: '2024-13-01T00:00:00Z'"),
        (True, "not RFC 3339 text or epoch seconds: True"),
        (None, "not RFC 3339 text or epoch seconds: None"),
        (math.nan, "not RFC 3339 text or epoch seconds: nan"),
        (1e12, "1000000000000.0 is outside years 1-9999 (UTC)"),  # ms given as seconds: year 33658
        ("0001-01-01T00:00:00+01:00", "'0001-01-01T00:00:00+01:00' is outside years 1-9999 (UTC)"),
    ],
)
def test_bad_min_event_time_is_refused_naming_the_field(bad: object, problem: str) -> None:
    assert _refusal(_with(min_event_time=bad)) == f"config: min_event_time: {problem}"


@pytest.mark.parametrize(
    ("floor", "floor_us"),
    [
        (None, 946_684_800_000_000),  # unset: 2000-01-01T00:00:00Z
        ("1970-01-01T00:00:00Z", 0),
        ("2024-01-01T01:00:00+01:00", 1_704_067_200_000_000),
        ("2024-01-01", 1_704_067_200_000_000),  # naive: UTC
        (1_704_067_200.5, 1_704_067_200_500_000),  # epoch seconds, whatever event_time_unit
    ],
)
def test_min_event_time_as_text_or_epoch_seconds(floor: object, floor_us: int) -> None:
    data = _with(event_time_unit="ms") if floor is None else _with(min_event_time=floor)

    config = parse_config(data)

    assert config.min_event_time_us == floor_us
    assert parse_config(config.model_dump(mode="json")) == config  # round-trips


@pytest.mark.parametrize(
    "written", ["2024-01-01T00:00:00Z", "2024-01-01", "'2024-01-01T00:00:00Z'"]
)
def test_min_event_time_written_unquoted_in_yaml(tmp_path: Path, written: str) -> None:
    # YAML reads an unquoted timestamp as a datetime (a date alone as a date): still the same time.
    path = _write(tmp_path, yaml.safe_dump(MINIMAL) + f"min_event_time: {written}\n")

    assert load_config(path).min_event_time_us == 1_704_067_200_000_000


def test_every_bad_field_is_named_in_one_message() -> None:
    data = _with(window={"size": "10m", "period": "nope"}, bogus=1)
    message = _refusal(data)

    assert "window.period" in message and "bogus" in message


def test_load_config_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, _with(window={"size": "10m", "period": "3m"}))

    with pytest.raises(ConfigError, match=re.escape(f"{path}: window:")):
        load_config(path)


def test_config_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "- just\n- a list\n")

    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


# --- the baseline path -----------------------------------------------------------------------


def test_relative_baseline_resolves_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "jobs" / "checkout"
    folder.mkdir(parents=True)
    path = _write(folder, _with(baseline="data/baseline.json"))
    monkeypatch.chdir(tmp_path)  # the working directory must not matter

    config = load_config(path.relative_to(tmp_path))

    assert config.baseline == str((folder / "data" / "baseline.json").resolve())


def test_absolute_and_url_baselines_are_kept_as_written(tmp_path: Path) -> None:
    absolute = str(tmp_path / "elsewhere" / "baseline.json")
    url = "gs://bucket/baseline.json"

    assert load_config(_write(tmp_path, _with(baseline=absolute))).baseline == absolute
    assert load_config(_write(tmp_path, _with(baseline=url))).baseline == url


# --- JSON Schema -----------------------------------------------------------------------------


def test_json_schema_validates_the_example_config() -> None:
    jsonschema.validate(_example(), config_json_schema())


def test_json_schema_describes_the_example_and_forbids_unknown_fields() -> None:
    schema = config_json_schema()
    json.dumps(schema)  # serialisable as it is

    assert schema["additionalProperties"] is False
    assert set(_example()) <= set(schema["properties"])
    assert set(schema["required"]) <= set(_example())
    for name in ("WindowSpec", "NumericFeature", "CategoricalFeature", "DriftSpec", "KafkaSpec"):
        assert schema["$defs"][name]["additionalProperties"] is False, name


def test_json_schema_duration_pattern_accepts_the_example_durations() -> None:
    window = config_json_schema()["$defs"]["WindowSpec"]["properties"]
    text_schema = next(s for s in window["size"]["anyOf"] if s["type"] == "string")
    pattern = re.compile(text_schema["pattern"])

    for text in _example()["window"].values():
        assert pattern.fullmatch(text), text
    for text in ("90s", "500ms", "1.5h", "2d"):
        assert pattern.fullmatch(text), text
    assert not pattern.fullmatch("10 minutes")


# --- CLI -------------------------------------------------------------------------------------


def _kldrift(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kldrift.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_config_schema_prints_the_json_schema() -> None:
    result = _kldrift("config", "schema")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == config_json_schema()


def test_cli_config_check_of_a_bad_config_exits_2_with_one_error_line(tmp_path: Path) -> None:
    path = _write(tmp_path, _with(window={"size": "10m", "period": "3m"}))

    result = _kldrift("config", "check", "--config", path)

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kldrift: error: {path}: window:")
    assert "multiple" in lines[0]


def test_cli_config_check_of_a_good_config_exits_0(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)

    result = _kldrift("config", "check", "--config", path)

    assert result.returncode == 0, result.stderr
    assert f"{path}: valid (1 features" in result.stdout
