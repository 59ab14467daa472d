"""Binning (numeric edges, categories, missing/invalid slots) and the baseline it is checked against."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from kldrift.binning import BaselineMismatch, FeatureBins, resolve_bins
from kldrift.schemas.baseline import Baseline, BaselineError, FeatureBaseline, parse_baseline
from kldrift.schemas.config import parse_config

EDGES: list[float] = [0, 5, 10]
# Slots for EDGES: 0 (-inf, 0), 1 [0, 5), 2 [5, 10), 3 [10, +inf), 4 missing, 5 invalid.
BELOW, LOW, MID, HIGH, MISSING, INVALID = range(6)

CATEGORIES = ["US", "DE", "FR"]
# Slots: 0 US, 1 DE, 2 FR, 3 __other__, 4 missing, 5 invalid.
US, DE, FR, OTHER, CAT_MISSING, CAT_INVALID = range(6)


@pytest.fixture
def numeric() -> FeatureBins:
    return FeatureBins.numeric("latency_ms", EDGES)


@pytest.fixture
def categorical() -> FeatureBins:
    return FeatureBins.categorical("country", CATEGORIES)


# --- numeric ---------------------------------------------------------------------------------


def test_value_on_an_edge_goes_to_the_bin_on_its_right(numeric: FeatureBins) -> None:
    codes = numeric.codes([0, 5, 10, 4.999999, 9.999999, -1e-9])

    assert codes.tolist() == [LOW, MID, HIGH, LOW, MID, BELOW]


def test_infinities_go_to_the_outer_bins(numeric: FeatureBins) -> None:
    assert numeric.codes([-math.inf, math.inf]).tolist() == [BELOW, HIGH]


def test_nan_and_none_are_missing(numeric: FeatureBins) -> None:
    assert numeric.codes([math.nan, None, 3]).tolist() == [MISSING, MISSING, LOW]


def test_bool_and_text_are_invalid_even_when_they_look_numeric(numeric: FeatureBins) -> None:
    codes = numeric.codes([True, False, "3", "", 7, None])

    assert codes.tolist() == [INVALID, INVALID, INVALID, INVALID, MID, MISSING]


@pytest.mark.parametrize("container", [[1.0], {"v": 1}])
def test_containers_are_invalid(numeric: FeatureBins, container: Any) -> None:
    assert numeric.codes([container]).tolist() == [INVALID]


def test_ints_and_floats_mixed(numeric: FeatureBins) -> None:
    codes = numeric.codes([1, 2.5, 7, 7.0, -3, -0.5, 12, 10.0])

    assert codes.tolist() == [LOW, LOW, MID, MID, BELOW, BELOW, HIGH, HIGH]


def test_numpy_scalars_bin_like_python_numbers(numeric: FeatureBins) -> None:
    values = [np.int64(7), np.float32(2.5), np.float64(-1.0), np.int32(10), np.bool_(True)]

    assert numeric.codes(values).tolist() == [MID, LOW, BELOW, HIGH, INVALID]


def test_int_too_large_for_a_float_lands_in_an_outer_bin(numeric: FeatureBins) -> None:
    # json.loads("1" + "0" * 400) is a valid int that float() cannot hold; it is beyond every edge.
    huge = 10**400

    assert numeric.codes([huge, -huge, 3]).tolist() == [HIGH, BELOW, LOW]
    assert numeric.codes([huge, "x", None]).tolist() == [HIGH, INVALID, MISSING]


def test_random_values_match_an_independent_count_of_edges_passed() -> None:
    rng = np.random.default_rng(20240101)
    edges = np.sort(rng.choice(np.arange(-50, 51), size=12, replace=False)).astype(float)
    values = rng.uniform(-60, 60, size=10_000)
    on_edge = rng.random(values.size) < 0.2  # ~2000 values exactly on an edge
    values[on_edge] = rng.choice(edges, size=int(on_edge.sum()))
    bins = FeatureBins.numeric("x", edges.tolist())

    # bin index = number of edges <= value, i.e. intervals closed on the left
    expected = (values[:, None] >= edges[None, :]).sum(axis=1)
    codes = bins.codes(values.tolist())

    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(codes, np.searchsorted(edges, values, side="right"))
    outer = [-np.inf, *edges, np.inf]
    by_hand = [int(((values >= lo) & (values < hi)).sum()) for lo, hi in itertools.pairwise(outer)]
    counts = bins.count(values.tolist())
    assert counts.tolist() == [*by_hand, 0, 0]
    assert counts.sum() == 10_000


def test_numeric_labels(numeric: FeatureBins) -> None:
    assert numeric.labels == ("(-inf, 0)", "[0, 5)", "[5, 10)", "[10, +inf)")
    assert FeatureBins.numeric("x", [0.1, 2.5]).labels == (
        "(-inf, 0.1)",
        "[0.1, 2.5)",
        "[2.5, +inf)",
    )
    assert numeric.n_bins == len(numeric.labels) == 4


def test_count_has_bins_then_missing_then_invalid(numeric: FeatureBins) -> None:
    counts = numeric.count([-1, 1, 2, 6, 11, 12, 13, None, math.nan, "x"])

    # bins: one below 0, two in [0,5), one in [5,10), three at/above 10; 2 missing, 1 invalid
    assert counts.tolist() == [1, 2, 1, 3, 2, 1]
    assert counts.dtype == np.int64


def test_count_of_no_values_is_all_zero(numeric: FeatureBins) -> None:
    assert numeric.count([]).tolist() == [0] * 6


# --- categorical -----------------------------------------------------------------------------


def test_listed_categories_keep_their_order(categorical: FeatureBins) -> None:
    assert categorical.codes(["FR", "US", "DE", "US"]).tolist() == [FR, US, DE, US]
    assert categorical.labels == ("US", "DE", "FR", "__other__")


def test_unknown_category_is_other(categorical: FeatureBins) -> None:
    assert categorical.codes(["JP", "us", "", "US"]).tolist() == [OTHER, OTHER, OTHER, US]


def test_none_category_is_missing(categorical: FeatureBins) -> None:
    assert categorical.codes([None, "DE"]).tolist() == [CAT_MISSING, DE]


@pytest.mark.parametrize("value", [{"c": "US"}, ["US"], 1.5, math.nan])
def test_dict_list_float_category_is_invalid(categorical: FeatureBins, value: Any) -> None:
    assert categorical.codes([value, "US"]).tolist() == [CAT_INVALID, US]


def test_int_and_bool_categories_match_their_text() -> None:
    bins = FeatureBins.categorical("code", ["7", "true", "false"])

    assert bins.codes([7, True, False, 8]).tolist() == [0, 1, 2, 3]


def test_categorical_count(categorical: FeatureBins) -> None:
    counts = categorical.count(["US", "US", "FR", "JP", None, 2.0])

    assert counts.tolist() == [2, 0, 1, 1, 1, 1]


# --- count_groups ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_count_groups_equals_count_of_each_group(kind: str) -> None:
    rng = np.random.default_rng(7)
    n_values, n_groups = 3_000, 9  # some groups may be empty: group ids drawn from 0..7
    if kind == "numeric":
        bins = FeatureBins.numeric("x", [-1.0, 0.0, 0.5, 2.0])
        pool: list[Any] = [*rng.normal(size=n_values).tolist(), None, "bad", 0.5, True]
    else:
        bins = FeatureBins.categorical("c", ["a", "b", "c"])
        pool = ["a", "b", "c", "d", None, 3.0, {}]
    values = [pool[i] for i in rng.integers(0, len(pool), size=n_values)]
    group = rng.integers(0, n_groups - 1, size=n_values)

    per_group = bins.count_groups(values, group, n_groups)

    assert per_group.shape == (n_groups, bins.n_bins + 2)
    for g in range(n_groups):
        in_group = [v for v, gg in zip(values, group, strict=True) if gg == g]
        np.testing.assert_array_equal(per_group[g], bins.count(in_group), err_msg=f"group {g}")
    assert per_group[n_groups - 1].sum() == 0
    assert per_group.sum() == n_values


# --- baselines -------------------------------------------------------------------------------


def _numeric_baseline(
    name: str = "latency_ms", edges: list[float] | None = None
) -> FeatureBaseline:
    chosen = EDGES if edges is None else edges
    return FeatureBaseline(
        name=name, kind="numeric", edges=chosen, counts=list(range(1, len(chosen) + 2))
    )


def _categorical_baseline(
    name: str = "country", categories: list[str] | None = None
) -> FeatureBaseline:
    chosen = CATEGORIES if categories is None else categories
    return FeatureBaseline(
        name=name, kind="categorical", categories=chosen, counts=[5] * (len(chosen) + 1)
    )


def _baseline(*features: FeatureBaseline) -> Baseline:
    return Baseline.create(list(features), source="train.jsonl", created_at="2024-01-01T00:00:00Z")


def _config(*features: dict[str, Any]) -> Any:
    return parse_config(
        {
            "name": "m",
            "event_time_field": "ts",
            "window": {"size": "10m", "period": "1m"},
            "features": list(features),
        }
    )


NUMERIC_SPEC = {"name": "latency_ms", "kind": "numeric", "edges": EDGES}
CATEGORICAL_SPEC = {"name": "country", "kind": "categorical", "categories": CATEGORIES}


def test_resolve_bins_of_a_matching_baseline() -> None:
    learned = {"name": "amount", "kind": "numeric", "bins": 4}
    config = _config(NUMERIC_SPEC, CATEGORICAL_SPEC, learned)
    baseline = _baseline(
        _categorical_baseline(), _numeric_baseline("amount", [1.5, 7.25]), _numeric_baseline()
    )

    latency, country, amount = resolve_bins(config, baseline)

    assert latency.labels == ("(-inf, 0)", "[0, 5)", "[5, 10)", "[10, +inf)")
    assert country.labels == ("US", "DE", "FR", "__other__")
    assert amount.labels == ("(-inf, 1.5)", "[1.5, 7.25)", "[7.25, +inf)")  # learned from baseline


@pytest.mark.parametrize(
    ("spec", "stored", "problem"),
    [
        (NUMERIC_SPEC, _numeric_baseline(edges=[0, 5, 20]), "edges differ"),
        (CATEGORICAL_SPEC, _categorical_baseline(categories=["US", "FR", "DE"]), "categories"),
        (
            {"name": "latency_ms", "kind": "categorical", "top_k": 5},
            _numeric_baseline(),
            "config says categorical, baseline has numeric",
        ),
        (
            {"name": "latency_ms", "kind": "numeric", "bins": 3},
            _numeric_baseline(edges=[1, 2, 3]),
            "baseline has 4 bins, config asks 3",
        ),
        (
            {"name": "country", "kind": "categorical", "top_k": 2},
            _categorical_baseline(),
            "baseline has 3 categories, top_k is 2",
        ),
    ],
)
def test_resolve_bins_refuses_a_baseline_that_differs(
    spec: dict[str, Any], stored: FeatureBaseline, problem: str
) -> None:
    with pytest.raises(BaselineMismatch) as caught:
        resolve_bins(_config(spec), _baseline(stored))

    assert f"feature {spec['name']!r}" in str(caught.value)
    assert problem in str(caught.value)


def test_resolve_bins_refuses_a_baseline_without_the_feature() -> None:
    baseline = _baseline(_numeric_baseline())

    with pytest.raises(BaselineMismatch, match="feature 'country' is in the config but not"):
        resolve_bins(_config(NUMERIC_SPEC, CATEGORICAL_SPEC), baseline)


def test_baseline_refuses_counts_of_the_wrong_length() -> None:
    with pytest.raises(ValidationError, match=r"feature 'latency_ms': 3 counts for 4 bins"):
        FeatureBaseline(name="latency_ms", kind="numeric", edges=EDGES, counts=[1, 2, 3])


def test_baseline_refuses_negative_counts() -> None:
    with pytest.raises(ValidationError, match="counts cannot be negative"):
        FeatureBaseline(name="latency_ms", kind="numeric", edges=EDGES, counts=[4, -1, 2, 3])
    with pytest.raises(ValidationError, match="missing"):
        FeatureBaseline(name="x", kind="numeric", edges=EDGES, counts=[1, 1, 1, 1], missing=-1)


def test_baseline_refuses_a_kind_without_its_bins() -> None:
    with pytest.raises(ValidationError, match="a numeric baseline has edges only"):
        FeatureBaseline(name="x", kind="numeric", categories=["a"], counts=[1, 1])


def test_baseline_refuses_bins_no_binning_could_use() -> None:
    # Unsorted edges would put values in the wrong bins without any error from searchsorted.
    with pytest.raises(ValidationError, match="feature 'x': edges must be strictly increasing"):
        FeatureBaseline(name="x", kind="numeric", edges=[1.0, 0.5], counts=[1, 1, 1])
    with pytest.raises(ValidationError, match="feature 'x': edges must be finite"):
        FeatureBaseline(name="x", kind="numeric", edges=[0.0, math.inf], counts=[1, 1, 1])
    with pytest.raises(ValidationError, match="feature 'c': categories must be unique"):
        FeatureBaseline(name="c", kind="categorical", categories=["a", "a"], counts=[1, 1, 1])


def test_edited_baseline_file_is_refused() -> None:
    text = _baseline(_numeric_baseline()).model_dump_json()
    edited = json.loads(text)
    edited["features"][0]["counts"][0] += 1

    assert parse_baseline(text, "baseline.json").features[0].counts == [1, 2, 3, 4]
    with pytest.raises(BaselineError, match=r"baseline.json: .*does not match its content"):
        parse_baseline(json.dumps(edited), "baseline.json")


def test_baseline_create_gives_the_same_id_for_the_same_content() -> None:
    first = Baseline.create([_numeric_baseline()], source="a.jsonl", created_at="2024-01-01")
    again = Baseline.create([_numeric_baseline()], source="b.jsonl", created_at="2025-06-30")
    other = Baseline.create(
        [_numeric_baseline(edges=[0, 5, 11])], source="a.jsonl", created_at="2024-01-01"
    )

    assert first.id == again.id  # the id covers the bins and counts, not when or from where
    assert first.id != other.id
    assert len(first.id) == 64 and int(first.id, 16) >= 0  # a sha256 hex digest
    assert parse_baseline(first.model_dump_json(), "b.json") == first


# --- what the config asked when the bins were learned ------------------------------------------


def _learned(spec: dict[str, Any], n_bins: int) -> FeatureBaseline:
    """A feature learned under `spec` (bins or top_k) that got `n_bins` bins."""
    if spec["kind"] == "numeric":
        return FeatureBaseline(
            name=spec["name"],
            kind="numeric",
            edges=[float(e) for e in range(n_bins - 1)],
            counts=[1] * n_bins,
            learned_with={"bins": spec["bins"]},
        )
    return FeatureBaseline(
        name=spec["name"],
        kind="categorical",
        categories=[f"c{i}" for i in range(n_bins - 1)],
        counts=[1] * n_bins,
        learned_with={"top_k": spec["top_k"]},
    )


@pytest.mark.parametrize(
    ("learned_under", "n_bins", "config_asks", "message"),
    [
        (  # fewer bins than the config asks: used silently before
            {"name": "latency_ms", "kind": "numeric", "bins": 5},
            5,
            {"name": "latency_ms", "kind": "numeric", "bins": 10},
            "feature 'latency_ms': baseline was learned with bins: 5, config asks bins: 10: "
            "rebuild the baseline with this config",
        ),
        (  # ties collapsed 10 asked bins to 7: still refused under bins: 8, which 7 bins fit
            {"name": "latency_ms", "kind": "numeric", "bins": 10},
            7,
            {"name": "latency_ms", "kind": "numeric", "bins": 8},
            "feature 'latency_ms': baseline was learned with bins: 10, config asks bins: 8: "
            "rebuild the baseline with this config",
        ),
        (
            {"name": "device", "kind": "categorical", "top_k": 3},
            4,
            {"name": "device", "kind": "categorical", "top_k": 4},
            "feature 'device': baseline was learned with top_k: 3, config asks top_k: 4: "
            "rebuild the baseline with this config",
        ),
        (
            {"name": "device", "kind": "categorical", "top_k": 4},
            5,
            {"name": "device", "kind": "categorical", "top_k": 3},
            "feature 'device': baseline was learned with top_k: 4, config asks top_k: 3: "
            "rebuild the baseline with this config",
        ),
    ],
)
def test_resolve_bins_refuses_a_baseline_learned_with_other_bins(
    learned_under: dict[str, Any], n_bins: int, config_asks: dict[str, Any], message: str
) -> None:
    with pytest.raises(BaselineMismatch) as caught:
        resolve_bins(_config(config_asks), _baseline(_learned(learned_under, n_bins)))

    assert str(caught.value) == message


def test_a_baseline_whose_ties_collapsed_its_bins_is_used_under_the_same_config() -> None:
    spec = {"name": "latency_ms", "kind": "numeric", "bins": 10}

    (latency,) = resolve_bins(_config(spec), _baseline(_learned(spec, 7)))

    assert latency.n_bins == 7


def test_a_learned_baseline_with_the_configs_own_edges_is_used() -> None:
    # Learned edges copied into the config fix the same bins: nothing to refuse.
    stored = _learned({"name": "latency_ms", "kind": "numeric", "bins": 4}, 4)
    config = _config({"name": "latency_ms", "kind": "numeric", "edges": [0, 1, 2]})

    (latency,) = resolve_bins(config, _baseline(stored))

    assert latency.labels == ("(-inf, 0)", "[0, 1)", "[1, 2)", "[2, +inf)")


# The file a baseline built before `learned_with` existed: amount learned with bins: 10 (5 bins,
# ties), country with top_k: 2. Its id is the sha256 of what the id hashed then, worked out here.
_OLD_FEATURES: list[dict[str, Any]] = [
    {
        "name": "amount",
        "kind": "numeric",
        "edges": [1.5, 2.5, 4.0, 8.0],
        "categories": None,
        "counts": [3, 4, 5, 6, 7],
        "missing": 1,
        "invalid": 0,
    },
    {
        "name": "country",
        "kind": "categorical",
        "edges": None,
        "categories": ["US", "DE"],
        "counts": [9, 8, 2],
        "missing": 0,
        "invalid": 1,
    },
]


def _old_baseline_text() -> tuple[str, str]:
    hashed = json.dumps(
        {"schema_version": 1, "features": _OLD_FEATURES}, sort_keys=True, separators=(",", ":")
    )
    old_id = hashlib.sha256(hashed.encode()).hexdigest()
    text = json.dumps(
        {
            "schema_version": 1,
            "id": old_id,
            "created_at": "2025-01-01T00:00:00Z",
            "source": "train.jsonl",
            "features": _OLD_FEATURES,
        }
    )
    return text, old_id


def test_a_baseline_built_before_learned_with_loads_with_its_old_id_and_the_size_checks() -> None:
    text, old_id = _old_baseline_text()

    baseline = parse_baseline(text, "old.json")

    assert baseline.id == old_id
    assert baseline.feature("amount").learned_with is None
    ten_bins = {"name": "amount", "kind": "numeric", "bins": 10}
    top_2 = {"name": "country", "kind": "categorical", "top_k": 2}
    amount, country = resolve_bins(_config(ten_bins, top_2), baseline)
    assert amount.n_bins == 5 and country.categories == ("US", "DE")
    with pytest.raises(BaselineMismatch, match="'amount': baseline has 5 bins, config asks 4"):
        resolve_bins(_config({**ten_bins, "bins": 4}), baseline)


def test_a_baseline_with_fixed_bins_is_written_without_learned_with() -> None:
    # What older kldrift reads (it refuses unknown fields), with the id it computed.
    _, old_id = _old_baseline_text()
    features = [FeatureBaseline(**f) for f in _OLD_FEATURES]

    written = json.loads(Baseline.create(features, source="t", created_at="2025").model_dump_json())

    assert written["id"] == old_id
    assert written["features"] == _OLD_FEATURES


def test_learned_with_is_part_of_a_baselines_id_and_checked_against_its_bins() -> None:
    text, old_id = _old_baseline_text()
    recorded = json.loads(text)
    recorded["features"][0]["learned_with"] = {"bins": 10}

    with pytest.raises(BaselineError, match="does not match its content"):
        parse_baseline(json.dumps(recorded), "edited.json")  # a record added by hand
    features = [FeatureBaseline(**f) for f in recorded["features"]]
    assert Baseline.create(features, source="t", created_at="2025").id != old_id
    with pytest.raises(
        ValidationError, match="'amount': 5 learned bins, more than learned_with's bins: 4"
    ):
        FeatureBaseline(**{**recorded["features"][0], "learned_with": {"bins": 4}})
    with pytest.raises(ValidationError, match=r"'amount': learned_with of a numeric feature is"):
        FeatureBaseline(**{**recorded["features"][0], "learned_with": {"top_k": 10}})


def test_config_check_says_the_learned_with_mismatch_in_one_line(tmp_path: Path) -> None:
    baseline = _baseline(_learned({"name": "latency_ms", "kind": "numeric", "bins": 5}, 5))
    (tmp_path / "baseline.json").write_text(baseline.model_dump_json())
    config = tmp_path / "job.yaml"
    config.write_text(
        "name: m\nevent_time_field: ts\nwindow: {size: 10m, period: 1m}\n"
        "features: [{name: latency_ms, kind: numeric, bins: 10}]\nbaseline: baseline.json\n"
    )

    result = subprocess.run(
        [sys.executable, "-m", "kldrift.cli", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr == (
        "kldrift: error: feature 'latency_ms': baseline was learned with bins: 5, config asks "
        "bins: 10: rebuild the baseline with this config\n"
    )
