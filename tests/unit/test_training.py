"""baseline_from_events: a baseline from training events in memory, refused naming the feature."""

from __future__ import annotations

import pytest

from kldrift import BaselineError, baseline_from_events, parse_config


def _config(feature: dict) -> object:
    return parse_config(
        {
            "name": "t",
            "event_time_field": "ts",
            "window": {"size": "1m", "period": "30s"},
            "features": [feature],
        }
    )


def test_counts_match_a_hand_count() -> None:
    config = _config({"name": "x", "kind": "numeric", "edges": [0, 10]})
    events = [{"x": -1}, {"x": 0}, {"x": 5}, {"x": 10}, {"x": 99}, {"x": "big"}, {}]
    feature = baseline_from_events(config, events).feature("x")  # type: ignore[arg-type]
    # Bins (-inf, 0), [0, 10), [10, inf): -1 | 0, 5 | 10, 99; "big" invalid; {} missing.
    assert (feature.counts, feature.missing, feature.invalid) == ([1, 2, 2], 1, 1)


def test_no_binnable_value_is_refused_naming_the_feature_and_what_was_seen() -> None:
    config = _config({"name": "x", "kind": "numeric", "edges": [0, 10]})
    with pytest.raises(
        BaselineError,
        match=r"'x': no binnable values in the 3 training events "
        r"\(2 missing, 1 invalid\)",
    ):
        baseline_from_events(config, [{}, {"x": None}, {"x": "big"}])  # type: ignore[arg-type]


def test_learned_bins_are_refused_naming_the_feature() -> None:
    config = _config({"name": "x", "kind": "numeric", "bins": 4})
    with pytest.raises(BaselineError, match="'x' learns its bins"):
        baseline_from_events(config, [{"x": 1}])  # type: ignore[arg-type]
