"""The file drivers share the decoder: `kldrift baseline` and `kldrift replay` run to the end over
files full of poison records, account for every line, and bad configs stay one line."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))
T0 = 1_700_000_000


def _kldrift(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KLDRIFT, *args], capture_output=True, text=True, timeout=300)


def _config(folder: Path, **kafka: str) -> Path:
    config = {
        "name": "poison",
        "event_time_field": "ts",
        "key_field": "model",
        "window": {"size": "2m", "period": "1m"},
        "features": [
            {"name": "x", "kind": "numeric", "bins": 4},
            {"name": "c", "kind": "categorical", "top_k": 3},
        ],
        "baseline": str(folder / "baseline.json"),
    }
    if kafka:
        config["kafka"] = {
            "bootstrap_servers": "127.0.0.1:9",
            "input_topic": "a",
            "output_topic": "b",
            "dead_letter_topic": "c",
            **kafka,
        }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# (line, dead-letter reason or None) for a file: every poison a file can carry (no tombstones).
POISON = [
    (b"\xff\xfe\xfa", "not_json"),
    (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
    (b'{"ts": 1' + b"0" * 400 + b', "model": "m"}', "invalid_event_time"),
    (b'{"ts": NaN, "model": "m"}', "invalid_event_time"),
    (b'{"ts": true, "model": "m"}', "invalid_event_time"),
    (b'{"ts": 221845392000, "model": "m", "x": 1, "c": "a"}', None),  # no clock in a file
    (b'{"ts": 1700000000, "model": "\\ud800"}', "invalid_key"),
    (b'{"ts": 1700000000, "model": [1]}', "missing_key"),
    (b'{"ts": 1700000000, "model": "m", "x": 1' + b"0" * 400 + b', "c": "\\ud800"}', None),
    (b'{"ts": 1700000000, "model": "m", "x": 1e400, "c": 123456789012345678901234567890}', None),
    (b'{"ts": 1700000000, "model": "m", "x": NaN, "c": {"k": 1}}', None),
    (
        b'{"ts": 1700000000, "model": "m", "x": [1], "c": null, "pad": "'
        + b"y" * 5_000_000
        + b'"}',
        None,
    ),
]


def _good(count: int) -> list[bytes]:
    return [
        json.dumps({"ts": T0 + i, "model": "m", "x": float(i % 10), "c": "abc"[i % 3]}).encode()
        for i in range(count)
    ]


def test_baseline_learns_from_a_file_full_of_poison(tmp_path: Path) -> None:
    config = _config(tmp_path)
    training = tmp_path / "training.jsonl"
    training.write_bytes(b"\n".join([*_good(300), *(line for line, _ in POISON)]) + b"\n")
    built = _kldrift(
        "baseline", "--config", str(config), "--input", str(training),
        "--output", str(tmp_path / "baseline.json"),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    baseline = {
        f["name"]: f for f in json.loads((tmp_path / "baseline.json").read_text())["features"]
    }
    # Events: 300 good + 4 odd ones (year 9000, and three with odd values).
    x, c = baseline["x"], baseline["c"]
    assert all(math.isfinite(edge) for edge in x["edges"])
    # x: 300 good + year-9000 (1) + 10**400 and 1e400 binned; NaN missing; [1] invalid.
    assert (sum(x["counts"]), x["missing"], x["invalid"]) == (303, 1, 1)
    assert x["counts"][-1] >= 2  # the two numbers past every float, in the top bin
    # c: top 3 are a, b, c (never the lone surrogate); the 30-digit int and the surrogate are
    # __other__, null is missing, the object invalid.
    assert c["categories"] == ["a", "b", "c"]
    assert (c["counts"], c["missing"], c["invalid"]) == ([101, 100, 100, 2], 1, 1)


def test_replay_reads_a_file_full_of_poison_to_the_end(tmp_path: Path) -> None:
    config = _config(tmp_path)
    training = tmp_path / "training.jsonl"
    training.write_bytes(b"\n".join(_good(300)) + b"\n")
    built = _kldrift(
        "baseline", "--config", str(config), "--input", str(training),
        "--output", str(tmp_path / "baseline.json"),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*_good(100), *(line for line, _ in POISON)]) + b"\n")
    done = _kldrift(
        "replay", "--config", str(config), "--input", str(events),
        "--output", str(tmp_path / "reports.jsonl"), "--dead-letter", str(tmp_path / "dead.jsonl"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    expected_dead = Counter(reason for _, reason in POISON if reason)
    binned = 100 + sum(1 for _, reason in POISON if reason is None)
    assert f"{binned} events binned, {sum(expected_dead.values())} dead-lettered" in done.stdout
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert Counter(d["reason"] for d in dead) == expected_dead
    # Each dead letter names its line (offset = line number) and carries the line's bytes.
    for d in dead:
        line, reason = POISON[d["offset"] - 101]
        assert d["reason"] == reason
        raw = d["value"].encode() if "value" in d else base64.b64decode(d["value_base64"])
        assert raw == line
    reports = [json.loads(line) for line in (tmp_path / "reports.jsonl").read_text().splitlines()]
    year_9000 = [r for r in reports if r["window_start"].startswith("9000")]
    assert {r["feature"] for r in year_9000} == {"x", "c"}  # replay keeps it: no wall clock


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1h", "kafka.max_future: '-1h' is not a duration"),
        ("0s", "kafka.max_future: Input should be greater than 0"),
        ("soon", "kafka.max_future: 'soon' is not a duration"),
    ],
)
def test_a_bad_max_future_is_one_line_naming_the_field(
    tmp_path: Path, value: str, message: str
) -> None:
    config = _config(tmp_path, max_future=value)
    result = _kldrift("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
