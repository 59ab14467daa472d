"""One timed `kldrift replay` in this process, for A/B comparisons of two versions of kldrift.

    python -m benchmarks.replay_once CONFIG INPUT [--code DIR] [--output FILE]

Runs an untimed 200-event replay first (Prism warm, as the harness does), then the timed one, and
prints its wall time and this process's CPU time (LOOPBACK: the SDK worker runs here; Prism is a
child process, not counted). `--code DIR` puts another kldrift first on the import path, e.g. one
unpacked with `git archive OLD kldrift | tar -x -C DIR`, and drops the editable install's finder
so that DIR's copy is the one imported. Alternate old and new runs in fresh processes: the machine
is shared and one pair says little.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("input")
    parser.add_argument("--code", help="a directory holding another kldrift/ to import")
    parser.add_argument("--output", help="where the reports go (default: a temporary file)")
    args = parser.parse_args()
    if args.code:
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path.insert(0, str(Path(args.code).resolve()))
    import kldrift
    from kldrift.jobs import load_job
    from kldrift.local.runners import local_runner_args
    from kldrift.pipeline.replay import run_replay

    config, baseline = load_job(args.config, None)
    beam_args = local_runner_args([])
    with tempfile.TemporaryDirectory() as work:
        warmup = Path(work) / "warmup.jsonl"
        with open(args.input, "rb") as events:
            warmup.write_bytes(b"".join(islice(events, 200)))
        run_replay(config, baseline, str(warmup), str(Path(work) / "warmup-out"), None, beam_args)
        output = args.output or str(Path(work) / "reports.jsonl")
        started, cpu = time.monotonic(), time.process_time()
        summary = run_replay(config, baseline, args.input, output, None, beam_args)
        wall, cpu = time.monotonic() - started, time.process_time() - cpu
    print(
        f"kldrift from {Path(kldrift.__file__).parent}: {summary.reports} reports, "
        f"wall {wall:.2f} s, worker CPU {cpu:.2f} s"
    )


if __name__ == "__main__":
    main()
