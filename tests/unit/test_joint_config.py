"""Joint features in the config and the baseline: what is refused, naming the field, and how a
joint bins events (README's "Bins": first part slowest, missing or invalid in either part)."""

from __future__ import annotations

import json
import re

import pytest

from kldrift import BaselineMismatch, baseline_from_events, parse_config
from kldrift.binning import resolve_bins
from kldrift.schemas.baseline import BaselineError, parse_baseline
from kldrift.schemas.config import ConfigError

pytestmark = pytest.mark.unit

PARTS = [
    {"name": "latency_ms", "kind": "numeric", "edges": [10, 100]},
    {"name": "payload.country", "kind": "categorical", "categories": ["de", "fr"]},
]


def _config(*joints: dict) -> dict:
    return {
        "name": "joints",
        "event_time_field": "ts",
        "window": {"size": "1m", "period": "1m"},
        "features": [*PARTS, *joints],
    }


def _joint(of: list[str], name: str = "latency_by_country") -> dict:
    return {"name": name, "kind": "joint", "of": of}


@pytest.mark.parametrize(
    ("of", "message"),
    [
        (
            ["latency_ms", "amount"],
            "'amount' is not a numeric or categorical feature of this config",
        ),
        (["latency_ms", "latency_ms"], "not 'latency_ms' twice"),
        (["latency_ms"], "at least 2 items"),
        (["latency_ms", "payload.country", "device"], "at most 2 items"),
    ],
)
def test_a_bad_joint_is_refused_naming_it(of: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(_joint(of)), "job.yaml")


def test_a_joint_of_more_than_100000_cells_is_refused_before_any_baseline() -> None:
    """1,000 learned quantile bins x (500 top categories + __other__): the joint's cells would
    not fit a report, and a baseline job would count 501,000 cells per window and key."""
    data = _config(_joint(["latency_ms", "payload.country"]))
    data["features"][0] = {"name": "latency_ms", "kind": "numeric", "bins": 1000}
    data["features"][1] = {"name": "payload.country", "kind": "categorical", "top_k": 500}
    with pytest.raises(ConfigError, match="up to 1000 x 501 = 501,000 cells, more than 100,000"):
        parse_config(data, "job.yaml")
    data["features"][1]["top_k"] = 99  # 1,000 x 100 cells: allowed
    assert parse_config(data).feature("latency_by_country").kind == "joint"


def test_a_joint_of_a_joint_is_refused() -> None:
    inner = _joint(["latency_ms", "payload.country"], "inner")
    with pytest.raises(ConfigError, match="joint 'outer': 'inner' is not a numeric or categorical"):
        parse_config(_config(inner, _joint(["inner", "latency_ms"], "outer")))


def test_a_joint_bins_pairs_of_its_parts_values() -> None:
    config = parse_config(_config(_joint(["latency_ms", "payload.country"])))
    events = [
        {"latency_ms": 5, "payload": {"country": "de"}},  # (-inf, 10) & de: cell 0
        {"latency_ms": 50, "payload": {"country": "fr"}},  # [10, 100) & fr: cell 1 * 3 + 1
        {"latency_ms": 500, "payload": {"country": "it"}},  # [100, +inf) & __other__: 2 * 3 + 2
        {"latency_ms": 500, "payload": {"country": "it"}},
        {"payload": {"country": "de"}},  # latency missing: the joint's missing
        {"latency_ms": "slow", "payload": {}},  # invalid in one part, missing in the other
    ]
    baseline = baseline_from_events(config, events)
    joint = baseline.feature("latency_by_country")
    assert joint.counts == [1, 0, 0, 0, 1, 0, 0, 0, 2]
    assert (joint.missing, joint.invalid) == (1, 1)
    [bins] = [b for b in resolve_bins(config, baseline) if b.name == "latency_by_country"]
    assert bins.labels[:3] == ("(-inf, 10) & de", "(-inf, 10) & fr", "(-inf, 10) & __other__")


def _baseline_data() -> dict:
    config = parse_config(_config(_joint(["latency_ms", "payload.country"])))
    events = [{"latency_ms": 5, "payload": {"country": "de"}}]
    return json.loads(baseline_from_events(config, events).model_dump_json())


def _rehashed(data: dict) -> str:
    from kldrift.schemas.baseline import FeatureBaseline, content_id

    data["id"] = content_id([FeatureBaseline.model_validate(f) for f in data["features"]])
    return json.dumps(data)


def test_a_baseline_joint_with_the_wrong_number_of_cells_is_refused() -> None:
    data = _baseline_data()
    data["features"][2]["counts"] = [1, 0, 0, 0]
    with pytest.raises(BaselineError, match="'latency_by_country': 4 counts for 9 joint cells"):
        parse_baseline(_rehashed(data), "baseline.json")


def test_a_baseline_joint_of_a_feature_it_lacks_is_refused() -> None:
    data = _baseline_data()
    data["features"][2]["of"] = ["latency_ms", "device"]
    with pytest.raises(BaselineError, match="joint of 'device', which the baseline lacks"):
        parse_baseline(_rehashed(data), "baseline.json")


def test_a_config_pairing_other_features_than_the_baseline_is_refused() -> None:
    baseline = parse_baseline(json.dumps(_baseline_data()), "baseline.json")
    swapped = parse_config(_config(_joint(["payload.country", "latency_ms"])))
    with pytest.raises(
        BaselineMismatch, match=re.escape("config pairs ['payload.country', 'latency_ms']")
    ):
        resolve_bins(swapped, baseline)


# A baseline exactly as the release before joints wrote it (commit b7a9860).
BEFORE_JOINTS = (
    '{"schema_version":1,"id":"c99f901420457a2769ef33b1f2b6622ebdbc387b6d2a13d1dddc5288f0790fd5",'
    '"created_at":"2026-12-01T00:00:00Z","source":"training.jsonl","features":[{"name":'
    '"latency_ms","kind":"numeric","edges":[10.0,100.0],"categories":null,"counts":[3,5,2],'
    '"missing":1,"invalid":0},{"name":"country","kind":"categorical","edges":null,'
    '"categories":["de","fr"],"counts":[4,4,1],"missing":0,"invalid":0}]}'
)


def test_baselines_written_before_joints_keep_their_ids() -> None:
    baseline = parse_baseline(BEFORE_JOINTS, "baseline.json")
    assert baseline.id == json.loads(BEFORE_JOINTS)["id"]
    # Written again by this release, it still has the same id.
    assert parse_baseline(baseline.model_dump_json(), "again").id == baseline.id
