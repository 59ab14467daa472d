"""`kldrift baseline` and `kldrift replay` as a user runs them: a generated file with a known shift
at a known time; counts and KL checked independently; errors are one line with exit code 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import entropy

from kldrift.jobs import load_job
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.replay import run_replay
from kldrift.synthetic import LATENCY_EDGES, SyntheticStream, demo_config, training_lines

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))
T0 = 1_700_000_400.0  # a multiple of 60 s
SHIFT = T0 + 300
MIN_EVENT_TIME = 946_684_800  # 2000-01-01T00:00:00Z, the default min_event_time
# A producer clock far behind (year 5) and an unset one (1970): dead letters, not windows.
BAD_CLOCKS = [
    json.dumps({"ts": ts, "model": "model-a", "latency_ms": 999.0, "amount": 1.0}).encode()
    for ts in (-62_000_000_000, 0)
]


def _kldrift(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KLDRIFT, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("batch")
    config = demo_config(size="2m", period="1m", baseline=str(folder / "baseline.json"))
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    training = [*BAD_CLOCKS, *training_lines(20_000, seed=5)]  # the baseline skips bad clocks too
    (folder / "training.jsonl").write_bytes(b"\n".join(training) + b"\n")
    stream = SyntheticStream(start=T0, duration=600, rate=20, drift_at=SHIFT, drift_size=1.0)
    malformed = [b"not json", b'{"model": "model-a"}', b'{"ts": "soon", "model": "model-a"}']
    lines = [*BAD_CLOCKS, *stream.lines(), *malformed]  # bad clocks among the first records read
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return {"dir": folder, "config": folder / "config.yaml"}


@pytest.fixture(scope="module")
def replayed(job: dict[str, Path]) -> list[dict]:
    folder = job["dir"]
    built = _kldrift(
        "baseline",
        "--config",
        str(job["config"]),
        "--input",
        str(folder / "training.jsonl"),
        "--output",
        str(folder / "baseline.json"),
    )
    assert built.returncode == 0, built.stderr[-2000:]
    assert "wrote" in built.stdout and "latency_ms: 9 bins, 20000 values" in built.stdout
    done = _kldrift(
        "replay",
        "--config",
        str(job["config"]),
        "--input",
        str(folder / "events.jsonl"),
        "--output",
        str(folder / "reports.jsonl"),
        "--dead-letter",
        str(folder / "dead.jsonl"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "12000 events binned, 5 dead-lettered" in done.stdout
    assert "events/s" in done.stdout
    return [json.loads(line) for line in (folder / "reports.jsonl").read_text().splitlines()]


def _events(folder: Path) -> list[dict]:
    events = []
    for line in (folder / "events.jsonl").read_bytes().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event.get("ts"), float | int) and event["ts"] >= MIN_EVENT_TIME:
            events.append(event)
    return events


def test_baseline_counts_equal_an_independent_histogram(job: dict[str, Path], replayed) -> None:
    baseline = json.loads((job["dir"] / "baseline.json").read_text())
    latency = next(f for f in baseline["features"] if f["name"] == "latency_ms")
    training = [json.loads(line) for line in (job["dir"] / "training.jsonl").open()]
    values = [e["latency_ms"] for e in training if e["ts"] >= MIN_EVENT_TIME]
    # Bin i holds values with exactly i edges <= value: [e(i-1), e(i)).
    expected = np.bincount([sum(v >= e for e in LATENCY_EDGES) for v in values], minlength=9)
    assert latency["counts"] == expected.tolist()
    amount = next(f for f in baseline["features"] if f["name"] == "amount")
    assert 5 <= len(amount["edges"]) <= 9  # bins: 10 -> up to 9 learned quantile edges
    amounts = np.array([e["amount"] for e in training if e["ts"] >= MIN_EVENT_TIME])
    shares = np.array(amount["counts"]) / len(amounts)
    assert np.all(np.abs(shares[1:-1] - 0.1) < 0.03)  # quantile bins hold ~10% each


def test_replay_reports_every_window_sorted_with_independent_counts_and_kl(
    job: dict[str, Path], replayed: list[dict]
) -> None:
    assert replayed == sorted(replayed, key=lambda r: (r["window_start"], r["key"], r["feature"]))
    assert {r["revision"] for r in replayed} == {0}
    baseline = json.loads((job["dir"] / "baseline.json").read_text())
    latency_baseline = np.array(
        next(f for f in baseline["features"] if f["name"] == "latency_ms")["counts"], dtype=float
    )
    windows: dict[tuple[str, float], list[float]] = defaultdict(list)
    for event in _events(job["dir"]):
        last = math.floor(event["ts"] / 60) * 60
        for start in (last, last - 60):
            windows[(event["model"], float(start))].append(event["latency_ms"])
    latency_reports = [r for r in replayed if r["feature"] == "latency_ms"]
    assert len(latency_reports) == len(windows)
    q = (latency_baseline + 0.5) / (latency_baseline.sum() + 0.5 * len(latency_baseline))
    for report in latency_reports:
        start = _epoch(report["window_start"])
        values = windows[(report["key"], start)]
        assert report["count"] == len(values)
        counts = np.bincount([sum(v >= e for e in LATENCY_EDGES) for v in values], minlength=9)
        assert report["kl_bits"] == pytest.approx(
            entropy(counts / counts.sum(), q, base=2), abs=1e-12
        )


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_drift_is_flagged_after_the_shift_and_not_before(replayed: list[dict]) -> None:
    latency = [r for r in replayed if r["feature"] == "latency_ms"]
    before = [r for r in latency if _epoch(r["window_end"]) <= SHIFT]
    after = [r for r in latency if _epoch(r["window_start"]) >= SHIFT and r["count"] > 300]
    assert before and after
    assert not any(r["drift"] for r in before)
    assert all(r["drift"] for r in after)


def test_dead_letters_carry_their_reasons(job: dict[str, Path], replayed) -> None:
    dead = [json.loads(line) for line in (job["dir"] / "dead.jsonl").read_text().splitlines()]
    assert [d["reason"] for d in dead] == [
        "past_event_time",
        "past_event_time",
        "not_json",
        "missing_event_time",
        "invalid_event_time",
    ]
    assert [d["detail"] for d in dead[:2]] == [
        "event time 0005-04-19T09:46:40Z is before min_event_time 2000-01-01T00:00:00Z",
        "event time 1970-01-01T00:00:00Z is before min_event_time 2000-01-01T00:00:00Z",
    ]
    assert dead[2]["value"] == "not json"
    # No window of year 5 or 1970: the first report is the stream's first window.
    assert min(_epoch(r["window_start"]) for r in replayed) == T0 - 60


def test_bad_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(demo_config(size="90s", period="1m")))
    result = _kldrift("replay", "--config", str(bad), "--input", "x", "--output", "y")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "window" in result.stderr and "multiple of window.period" in result.stderr


def test_baseline_that_does_not_match_is_refused_naming_the_feature(
    job: dict[str, Path], replayed, tmp_path: Path
) -> None:
    config = demo_config(size="2m", period="1m", baseline=str(job["dir"] / "baseline.json"))
    config["features"][0]["edges"] = [0, 1, 2]
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _kldrift("replay", "--config", str(path), "--input", "x", "--output", "y")
    assert result.returncode == 2
    assert "'latency_ms'" in result.stderr and "edges" in result.stderr


def test_baseline_records_what_learned_bins_were_asked_and_replay_refuses_other_asks(
    job: dict[str, Path], replayed, tmp_path: Path
) -> None:
    baseline = json.loads((job["dir"] / "baseline.json").read_text())
    recorded = {f["name"]: f.get("learned_with", "absent") for f in baseline["features"]}
    assert recorded == {
        "latency_ms": "absent",  # edges fixed by the config: the file reads as before
        "amount": {"bins": 10},
        "payload.country": "absent",
        "device": {"top_k": 5},
    }
    config = demo_config(size="2m", period="1m", baseline=str(job["dir"] / "baseline.json"))
    config["features"][3]["top_k"] = 6  # the baseline's 5 devices fit: used silently before
    path = tmp_path / "top6.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _kldrift("replay", "--config", str(path), "--input", "x", "--output", "y")
    assert result.returncode == 2
    assert result.stderr == (
        "kldrift: error: feature 'device': baseline was learned with top_k: 5, config asks "
        "top_k: 6: rebuild the baseline with this config\n"
    )


def test_missing_input_is_one_line(job: dict[str, Path], replayed, tmp_path: Path) -> None:
    result = _kldrift(
        "replay",
        "--config",
        str(job["config"]),
        "--input",
        str(tmp_path / "none*.jsonl"),
        "--output",
        str(tmp_path / "out.jsonl"),
    )
    assert result.returncode == 2
    assert "no file matches --input" in result.stderr


def test_baseline_that_cannot_learn_its_bins_fails_in_one_line_not_tracebacks(
    tmp_path: Path,
) -> None:
    # The feature to learn edges for never appears: the job fails inside the pipeline, where the
    # runner and its worker used to log the traceback again and again (438 lines of stderr).
    config = demo_config(size="2m", period="1m")
    config["features"] = [{"name": "never_there", "kind": "numeric", "bins": 4}]
    path = tmp_path / "learn.yaml"
    path.write_text(yaml.safe_dump(config))
    events = tmp_path / "events.jsonl"
    events.write_text('{"ts": 1700000000, "model": "a"}\n')
    result = _kldrift(
        "baseline", "--config", str(path), "--input", str(events), "--output", str(tmp_path / "b")
    )
    assert result.returncode == 2
    assert "kldrift: error: feature 'never_there': no numeric values" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) < 15, result.stderr


def test_an_output_that_cannot_be_written_is_one_line_before_any_job(
    job: dict[str, Path], replayed, tmp_path: Path
) -> None:
    (tmp_path / "out.jsonl").mkdir()
    for flags, said in (
        (["--output", str(tmp_path / "out.jsonl")], "is a directory, not a file"),
        (["--output", str(tmp_path / "no" / "out.jsonl")], f"the folder {tmp_path / 'no'} does"),
        (["--output", str(tmp_path / "r.jsonl"), "--dead-letter", str(tmp_path)], "--dead-letter"),
    ):
        result = _kldrift(
            "replay", "--config", str(job["config"]), "--input", str(job["dir"] / "events.jsonl"),
            *flags,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr[-2000:]
        assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_replay_that_fails_at_its_last_step_leaves_no_spill_file(
    job: dict[str, Path], replayed, tmp_path: Path
) -> None:
    # The library call with an output that is a directory: every report block is spilled beside
    # it, then writing the sorted file fails. The spills (pickled report lines) must not outlive
    # the failed job.
    (tmp_path / "out.jsonl").mkdir()
    config, baseline = load_job(str(job["config"]), None)
    with pytest.raises(Exception, match="Is a directory"):
        run_replay(
            config,
            baseline,
            str(job["dir"] / "events.jsonl"),
            str(tmp_path / "out.jsonl"),
            beam_args=local_runner_args([]),
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_replay_to_a_relative_path_leaves_only_its_output(
    job: dict[str, Path], replayed, tmp_path: Path
) -> None:
    result = subprocess.run(
        [KLDRIFT, "replay", "--config", str(job["config"]), "--input",
         str(job["dir"] / "events.jsonl"), "--output", "reports.jsonl"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir()] == ["reports.jsonl"]
    assert (tmp_path / "reports.jsonl").read_bytes() == (job["dir"] / "reports.jsonl").read_bytes()
