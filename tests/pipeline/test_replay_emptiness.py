"""`kldrift replay` on Prism says what a file gave it nothing of: the dead letters per reason, with
exact counts, and each feature without a value in any event binned (a renamed field); `--strict`
makes either an error, and a normal file passes it saying nothing more."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from _jobs import run_cli

T0 = 1_700_000_400  # a multiple of 60 s
EVENTS = 3000
COUNTRIES = ["US", "DE", "FR"]
EMPTINESS = ("dead letters:", "feature '", "no records read")


def _events(count: int, seed: int) -> list[dict]:
    """`count` events 0.1 s apart (5 minutes for 3000), keys a/b, both features present."""
    rng = np.random.default_rng(seed)
    return [
        {
            "ts": T0 + i / 10,
            "model": "ab"[i % 2],
            "latency_ms": round(float(rng.lognormal(3, 1)), 3),
            "payload": {"country": COUNTRIES[int(rng.integers(3))]},
        }
        for i in range(count)
    ]


def _lines(events: list[dict]) -> list[bytes]:
    return [json.dumps(event).encode() for event in events]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("emptiness")
    config = {
        "name": "emptiness",
        "event_time_field": "ts",
        "key_field": "model",
        "window": {"size": "2m", "period": "1m"},
        "features": [
            {"name": "latency_ms", "kind": "numeric", "edges": [10, 20, 50, 100]},
            {"name": "payload.country", "kind": "categorical", "categories": COUNTRIES},
        ],
        "baseline": str(folder / "baseline.json"),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "training.jsonl").write_bytes(b"\n".join(_lines(_events(2000, seed=1))) + b"\n")
    built = _kldrift(
        "baseline", "--config", str(folder / "config.yaml"),
        "--input", str(folder / "training.jsonl"), "--output", str(folder / "baseline.json"),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    return folder


def _kldrift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=300, env=env)


def _replay(
    job: Path, name: str, lines: list[bytes], *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    events = job / f"{name}.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in lines))
    return _kldrift(
        "replay", "--config", str(job / "config.yaml"), "--input", str(events),
        "--output", str(job / f"{name}-reports.jsonl"), *flags, env=env,
    )  # fmt: skip


def _said(done: subprocess.CompletedProcess) -> list[str]:
    """The emptiness lines replay printed (after its summary line)."""
    return [line for line in done.stdout.splitlines() if line.startswith(EMPTINESS)]


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("kldrift: error:")]


def _without_time(count: int) -> list[bytes]:
    return _lines([{k: v for k, v in e.items() if k != "ts"} for e in _events(count, seed=2)])


def test_a_file_whose_every_record_lacks_its_time_says_so_with_the_exact_count(job: Path) -> None:
    done = _replay(job, "no-time", _without_time(EVENTS))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"0 events binned, {EVENTS} dead-lettered" in done.stdout
    # Nothing was binned: no feature can be said to be missing.
    assert _said(done) == [f"dead letters: {EVENTS} missing_event_time"]


def test_strict_refuses_a_file_whose_every_record_is_dead_lettered(job: Path) -> None:
    done = _replay(job, "no-time-strict", _without_time(EVENTS), "--strict")
    assert done.returncode == 2
    assert _said(done) == [f"dead letters: {EVENTS} missing_event_time"]
    assert _error_lines(done) == [
        f"kldrift: error: --strict: all {EVENTS} records read were dead-lettered "
        f"({EVENTS} missing_event_time)"
    ]
    assert "Traceback" not in done.stderr


def test_dead_letters_of_several_reasons_are_counted_exactly_most_first(job: Path) -> None:
    events = _events(EVENTS, seed=3)
    # Lines 0-299 not JSON, 300-799 without a time, 800-999 without a key; the rest are events.
    lines = _lines(events)
    lines[:300] = [b"{oops"] * 300
    lines[300:800] = [json.dumps({**e, "ts": None}).encode() for e in events[300:800]]
    lines[800:1000] = [
        json.dumps({k: v for k, v in e.items() if k != "model"}).encode() for e in events[800:1000]
    ]
    done = _replay(job, "mixed", lines, "--strict")
    assert done.returncode == 0, done.stderr[-3000:]
    # Every line accounted for: 2000 binned + 1000 dead-lettered = the file's 3000 lines.
    assert "2000 events binned, 1000 dead-lettered" in done.stdout
    assert _said(done) == [
        "dead letters: 500 missing_event_time",
        "dead letters: 300 not_json",
        "dead letters: 200 missing_key",
    ]


def test_features_without_a_value_in_any_event_are_named_and_the_run_warning_counts_them(
    job: Path,
) -> None:
    # latency_ms renamed by the producer; payload.country sent as a list (a type it does not take).
    renamed = [
        {
            "ts": e["ts"],
            "model": e["model"],
            "latency": e["latency_ms"],
            "payload": {"country": [e["payload"]["country"]]},
        }
        for e in _events(EVENTS, seed=4)
    ]
    # A warning every batch (the interval of `kldrift run`'s once-a-minute warning, shortened).
    done = _replay(job, "renamed", _lines(renamed), env={"KLDRIFT_WARN_INTERVAL_S": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{EVENTS} events binned, 0 dead-lettered" in done.stdout
    assert _said(done) == [
        f"feature 'latency_ms': missing in all {EVENTS} events binned (renamed field?)",
        f"feature 'payload.country': invalid in all {EVENTS} events binned "
        "(a type its kind does not take)",
    ]
    # The Bin step's warning, logged in the worker (in this process: LOOPBACK), reaches stderr;
    # over its lines, every event is counted once.
    warned = re.findall(
        r"kldrift: last [\d.]+ s: feature 'latency_ms': missing in all (\d+) events binned",
        done.stderr,
    )
    assert warned and sum(map(int, warned)) == EVENTS, done.stderr[-3000:]


def test_strict_refuses_features_without_a_value_in_any_event(job: Path) -> None:
    renamed = [
        {("latency" if k == "latency_ms" else k): v for k, v in e.items()}
        for e in _events(EVENTS, seed=5)
    ]
    done = _replay(job, "renamed-strict", _lines(renamed), "--strict")
    assert done.returncode == 2
    assert _said(done) == [
        f"feature 'latency_ms': missing in all {EVENTS} events binned (renamed field?)"
    ]
    assert _error_lines(done) == [
        f"kldrift: error: --strict: feature 'latency_ms' had no value in any of the {EVENTS} "
        "events binned"
    ]


def test_a_normal_file_says_nothing_more_and_passes_strict(job: Path) -> None:
    done = _replay(job, "normal", _lines(_events(EVENTS, seed=6)), "--strict")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{EVENTS} events binned, 0 dead-lettered" in done.stdout
    assert _said(done) == []
    assert "kldrift: last" not in done.stderr


def test_strict_refuses_an_empty_file(job: Path) -> None:
    done = _replay(job, "empty", [], "--strict")
    assert done.returncode == 2
    assert _said(done) == [f"no records read from {job / 'empty.jsonl'}"]
    assert _error_lines(done) == [
        f"kldrift: error: --strict: no records read from {job / 'empty.jsonl'}"
    ]
