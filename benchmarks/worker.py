"""One Beam batch benchmark in its own process: `python -m benchmarks.worker SPEC.json OUT.json`.

A process per task keeps each task's peak RSS its own (LOOPBACK: the SDK harness runs in this
process; Prism is a child whose peak is read from /proc before it exits) and lets the harness stop
the whole process group, Prism included, if anything hangs.

SPEC: {"task": "replay" | "naive", "trials": n, "warmup_input": path,
       "points": [{"name", "config", "baseline", "input", "events", "output"}]}
The first point is run once on the tiny warm-up input first (starts Prism; not timed) and, with
"overhead": true, once more on it (the fixed per-job cost, reported as overhead_s); then each
point runs `trials` times on its input.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.procs import cpu_seconds, peak_rss_mb, prism_child


def _runner(task: str) -> Callable[[Any, Any, str, str], dict[str, int]]:
    if task == "replay":
        from kldrift.local.runners import local_runner_args
        from kldrift.pipeline.replay import run_replay

        def replay(config: Any, baseline: Any, input_path: str, output: str) -> dict[str, int]:
            summary = run_replay(
                config, baseline, input_path, output, beam_args=local_runner_args([])
            )
            return {"events_binned": summary.events_binned, "reports": summary.reports}

        return replay
    if task == "naive":
        from benchmarks.naive import run_naive

        def naive(config: Any, baseline: Any, input_path: str, output: str) -> dict[str, int]:
            run_naive(config, baseline, input_path, output)
            with open(output, "rb") as handle:
                return {"reports": sum(1 for _ in handle)}

        return naive
    raise ValueError(f"unknown task {task!r}")


def _timed(run: Any, *args: Any) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one job, and its outcome with the CPU seconds of this process (the SDK
    harness: LOOPBACK) and of its Prism spent during it."""
    prism = prism_child(os.getpid())
    own, prism_cpu = cpu_seconds(os.getpid()), cpu_seconds(prism) if prism else None
    started = time.perf_counter()
    result = run(*args)
    elapsed = time.perf_counter() - started
    prism = prism or prism_child(os.getpid())
    own_after, prism_after = cpu_seconds(os.getpid()), cpu_seconds(prism) if prism else None
    cpu = {
        "worker_cpu_s": None if own is None or own_after is None else own_after - own,
        "prism_cpu_s": None if prism_after is None else prism_after - (prism_cpu or 0.0),
    }
    return elapsed, {**result, **cpu}


def main(argv: list[str]) -> int:
    logging.getLogger().setLevel(logging.ERROR)
    spec = json.loads(Path(argv[0]).read_text())
    from kldrift.schemas.baseline import load_baseline
    from kldrift.schemas.config import load_config

    run = _runner(spec["task"])
    result: dict[str, Any] = {"points": {}}
    for index, point in enumerate(spec["points"]):
        config = load_config(point["config"])
        baseline = load_baseline(point["baseline"])
        tiny_out = point["output"] + ".warmup"
        warmup_s = overhead_s = None
        if index == 0:
            warmup_s, _ = _timed(run, config, baseline, spec["warmup_input"], tiny_out)
            if spec.get("overhead"):
                overhead_s, _ = _timed(run, config, baseline, spec["warmup_input"], tiny_out)
        times: list[float] = []
        outcomes: list[dict[str, Any]] = []
        for trial in range(spec["trials"]):
            elapsed, outcome = _timed(run, config, baseline, point["input"], point["output"])
            times.append(elapsed)
            outcomes.append(outcome)
            print(
                f"worker: {spec['task']} {point['name']} trial {trial + 1}: {elapsed:.2f} s "
                f"({point['events'] / elapsed:,.0f} events/s) {outcome}",
                file=sys.stderr,
                flush=True,
            )
        result["points"][point["name"]] = {
            "times_s": times,
            "eps": [point["events"] / t for t in times],
            "warmup_s": warmup_s,
            "overhead_s": overhead_s,
            "outcome": outcomes[-1],
        }
    prism = prism_child(os.getpid())
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child's ru_maxrss starts at
    # the size of the parent it was forked from.
    result["peak_rss_mb"] = peak_rss_mb(os.getpid())
    result["prism_peak_rss_mb"] = peak_rss_mb(prism) if prism is not None else None
    result["prism_pid"] = prism
    Path(argv[1]).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
