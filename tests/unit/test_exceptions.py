"""The errors a user catches: one hierarchy under kldrift.KldriftError, exported from the package
root, still found where they used to live, still the ValueError or RuntimeError they were; the
front door raises them, and the CLI presents each in one line."""

from __future__ import annotations

import json

import pytest

import kldrift
from kldrift import errors, exceptions
from kldrift.schemas import FeatureBaseline

CONFIG = {
    "name": "shop",
    "event_time_field": "ts",
    "window": {"size": "60s", "period": "60s"},
    "features": [{"name": "country", "kind": "categorical", "categories": ["de", "fr"]}],
}


def _exported_exceptions() -> dict[str, type[BaseException]]:
    return {
        name: value
        for name in kldrift.__all__
        if isinstance(value := getattr(kldrift, name), type) and issubclass(value, BaseException)
    }


def test_every_exported_exception_is_a_kldrift_error() -> None:
    exported = _exported_exceptions()
    assert {
        name for name, cls in exported.items() if not issubclass(cls, kldrift.KldriftError)
    } == (set())
    # ...and the package exports the whole hierarchy, nothing of it left behind.
    assert set(exported.values()) == set(exceptions.user_error_types())


def test_a_baseline_mismatch_is_a_baseline_error() -> None:
    assert issubclass(kldrift.BaselineMismatch, kldrift.BaselineError)
    assert issubclass(kldrift.ResumeMismatch, kldrift.KafkaSetupError)
    assert issubclass(kldrift.TopicMissingError, kldrift.KafkaOutageError)


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("ConfigError", ValueError),
        ("BaselineError", ValueError),
        ("BaselineMismatch", ValueError),
        ("InputNotFound", ValueError),
        ("KafkaSetupError", RuntimeError),
        ("KafkaOutageError", RuntimeError),
        ("FlinkSetupError", RuntimeError),
    ],
)
def test_each_keeps_the_builtin_base_its_callers_catch(name: str, builtin: type) -> None:
    assert issubclass(getattr(kldrift, name), builtin)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("kldrift.schemas.config", "ConfigError"),
        ("kldrift.schemas.baseline", "BaselineError"),
        ("kldrift.binning", "BaselineMismatch"),
        ("kldrift.io.kafka_client", "KafkaSetupError"),
        ("kldrift.io.outage", "KafkaOutageError"),
        ("kldrift.io.outage", "TopicMissingError"),
        ("kldrift.pipeline.streaming", "ResumeMismatch"),
        ("kldrift.errors", "InputNotFound"),
        ("kldrift.errors", "FlinkSetupError"),
        ("kldrift.errors", "UserError"),
        ("kldrift.local.flink", "FlinkSetupError"),
    ],
)
def test_the_old_import_locations_give_the_same_class(module: str, name: str) -> None:
    import importlib

    assert getattr(importlib.import_module(module), name) is getattr(kldrift, name)


def test_catching_kldrift_error_catches_a_bad_config() -> None:
    with pytest.raises(kldrift.KldriftError, match=r"window\.size"):
        kldrift.parse_config({**CONFIG, "window": {"size": "-1s", "period": "60s"}})


def test_catching_kldrift_error_catches_a_bad_baseline_file(tmp_path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"schema_version": 1, "features": []}))
    with pytest.raises(kldrift.KldriftError, match="baseline"):
        kldrift.read_baseline(str(path))


def test_catching_kldrift_error_catches_a_baseline_that_does_not_fit() -> None:
    config = kldrift.parse_config(CONFIG)
    three_categories = kldrift.Baseline.create(
        [
            FeatureBaseline(
                name="country", kind="categorical", categories=["de", "fr", "it"], counts=[1] * 4
            )
        ],
        source="test",
        created_at="2024-01-01T00:00:00Z",
    )
    with pytest.raises(kldrift.KldriftError, match="'country'") as caught:
        kldrift.SlidingKLDivergence(config, three_categories)
    assert isinstance(caught.value, kldrift.BaselineMismatch)
    assert isinstance(caught.value, kldrift.BaselineError)


@pytest.mark.parametrize("cls", exceptions.user_error_types(), ids=lambda cls: cls.__name__)
def test_a_worker_traceback_of_any_of_them_is_presented_in_one_line(cls: type) -> None:
    """Inside a pipeline the error reaches the CLI as a runner's text: the class is recognised by
    its name (dotted with its module, as a traceback prints it) and its message kept."""
    text = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in process\n'
        f"{cls.__module__}.{cls.__name__}: feature 'country': what to do "
        "[while running 'SlidingKLDivergence/Score']\n"
    )
    assert errors._user_error_line(f"RuntimeError: Pipeline failed: {text}") == (
        "feature 'country': what to do"
    )


def test_a_traceback_of_another_error_is_not_a_user_error() -> None:
    assert errors._user_error_line("ValueError: feature 'country': boom") is None
    assert errors._user_error_line("MyConfigError: not ours") is None


def test_the_cli_prints_a_kldrift_error_in_one_line(tmp_path, capsys) -> None:
    from kldrift import cli

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({**CONFIG, "window": {"size": "-1s", "period": "60s"}}))
    assert cli.main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kldrift: error: ") and err.count("\n") == 1, err
    assert "window.size" in err
