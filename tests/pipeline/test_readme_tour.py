"""README's tour, step 2 ("Your own data"), run as written, in its order: every command up to
`kldrift run` (a Kafka job, run end to end in tests/e2e) on the example config, synthetic training
data and a synthetic stream, exits 0. `config check` comes first, before the baseline exists."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _jobs import run_cli

from kldrift.synthetic import SyntheticStream, training_lines

pytestmark = pytest.mark.services  # the batch commands run on Prism

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_400.0  # a multiple of the example config's 60 s period


def _tour_commands() -> list[list[str]]:
    tour = (ROOT / "README.md").read_text().split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\*\*2\. Your own data\.\*\*.*?```bash\n(.*?)```", tour, re.S)
    assert block is not None, "README's tour has no step 2 command block"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [command for command in commands if command]


def _data(folder: Path) -> None:
    shutil.copy(ROOT / "examples" / "config.yaml", folder / "config.yaml")
    (folder / "training").mkdir()
    # Training data in Parquet, as a data lake holds it: `ts` a timestamp column (UTC, µs).
    rows = [json.loads(line) for line in training_lines(5_000, seed=3)]
    moment = datetime(1970, 1, 1, tzinfo=UTC)
    for row in rows:
        row["ts"] = moment + timedelta(microseconds=round(row["ts"] * 1_000_000))
    pq.write_table(pa.Table.from_pylist(rows), folder / "training" / "part-0.parquet")
    stream = SyntheticStream(start=T0, duration=900, rate=10, drift_at=T0 + 450, drift_size=1.0)
    (folder / "events.jsonl").write_bytes(b"\n".join(stream.lines()) + b"\n")


def _kldrift(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, timeout=300, cwd=folder)


def test_the_tour_runs_in_its_order(tmp_path: Path) -> None:
    commands = _tour_commands()
    steps = [command[1] for command in commands]
    assert steps == ["config", "baseline", "replay", "report", "power", "run"], steps
    _data(tmp_path)
    for command in commands[: steps.index("run")]:
        assert command[0] == "kldrift"
        done = _kldrift(tmp_path, *command[1:])
        assert done.returncode == 0, (command, done.stderr[-2000:])
        if command[1] == "config":  # before the baseline exists: valid, baseline to be built
            assert "config.yaml: valid (4 features" in done.stdout
            assert "baseline.json: not built yet" in done.stdout, done.stdout
    assert (tmp_path / "baseline.json").exists() and (tmp_path / "plots" / "index.html").exists()
    assert (tmp_path / "reports.jsonl").read_text().count("\n") > 0


def test_config_check_compares_a_baseline_once_it_exists(tmp_path: Path) -> None:
    _data(tmp_path)
    built = _kldrift(
        tmp_path,
        "baseline",
        "--config",
        "config.yaml",
        "--input",
        "training/*.parquet",
        "--output",
        "baseline.json",
    )
    assert built.returncode == 0, built.stderr[-2000:]
    checked = _kldrift(tmp_path, "config", "check", "--config", "config.yaml")
    assert checked.returncode == 0 and "baseline.json: matches the config" in checked.stdout
    (tmp_path / "baseline.json").write_text("{}")  # a baseline that exists is read, not excused
    broken = _kldrift(tmp_path, "config", "check", "--config", "config.yaml")
    assert broken.returncode == 2 and broken.stderr.startswith("kldrift: error: "), broken.stderr
