"""What Prism spends its CPU on, from `perf` samples (benchmarks/PRISM_PROFILE.md).

    perf record -e cpu-clock -F 499 -g -o k.perf.data -- .venv/bin/kldrift replay ...
    perf script -i k.perf.data --comms prism -F time,ip,sym \
        | .venv/bin/python -m benchmarks.prism_profile analyse --hz 499 [--timeline]

prints Prism's CPU seconds by activity (the first matching rule over a sample's whole stack), the
top functions by self and cumulative share, and optionally a per-second timeline.

    .venv/bin/python -m benchmarks.prism_profile stream --perf-out s.perf.data

runs one full-size streaming trial (200,000 events, the benchmark's own data, broker and trial
code) and records the Prism process of its `kldrift run` with `perf record -p` from its start.
Measurement only: perf is not part of kldrift's set-up.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

BEAM = "github.com/apache/beam/sdks/v2/go/pkg/beam/"

ACTIVITIES = [
    (
        "state API (worker.State, TentativeData bag append/clear)",
        r"\(\*W\)\.State|beamFnState|TentativeData",
    ),
    (
        "data plane (worker.Data, element decode, PersistBundle, GBK)",
        r"\(\*W\)\.Data|beamFnData|pullDecoder|gbkBytes|elements\.ToData|PersistBundle|"
        r"DataAndTimerInputForBundle|buildEventTimeBundle|addPending|ioutilx|elementHeap|ProcessOn",
    ),
    (
        "control API (bundle requests, progress, metrics)",
        r"\(\*W\)\.Control|beamFnControl|sendInstruction|metricsStore|Progress|jobservices",
    ),
    (
        "watermark scheduler (ElementManager.Bundles, refreshWatermarks)",
        r"ElementManager\)\.Bundles|refreshWatermarks|bundleReady|processingTimeNow|"
        r"stageRefreshQueue|updateWatermarks|releaseDelayedResiduals|startEventTimeBundle",
    ),
    ("bundle wait loop (stage.Execute select)", r"internal\.\(\*stage\)\.Execute"),
    ("gRPC transport, stream not known (HTTP/2 reader, loopy writer)", r"grpc|http2"),
    ("Go GC", r"gcBgMarkWorker|bgsweep|bgscavenge|gcenable|gcStart|markroot|gcDrain"),
    (
        "Go scheduler, no Beam frame (findRunnable, park, futex)",
        r"runtime\.(schedule|findRunnable|park_m|mcall|mstart|stopm|sysmon)",
    ),
    ("start-up (package init)", r"runtime\.doInit|runtime\.main|rt0_go"),
]


def samples(lines: Iterable[str]) -> Iterator[tuple[float | None, list[str]]]:
    """(time, frames leaf first) per sample of `perf script -F [time,]ip,sym` output."""
    when: float | None = None
    frames: list[str] = []
    for line in lines:
        if not line.strip():
            if frames:
                yield when, frames
            when, frames = None, []
        elif not line[0].isspace():
            head = line.strip().rstrip(":").split()
            try:
                when = float(head[-1].rstrip(":"))
            except (ValueError, IndexError):
                when = None
        else:
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                symbol = re.sub(r"\+0x[0-9a-f]+$", "", parts[1]).replace(BEAM, "beam/")
                frames.append(("[k] " if parts[0].startswith("ffffffff") else "") + symbol)
    if frames:
        yield when, frames


def analyse(lines: Iterable[str], hz: float, top: int, timeline: bool) -> None:
    rules = [(name, re.compile(pattern)) for name, pattern in ACTIVITIES]
    activity: collections.Counter[str] = collections.Counter()
    self_fn: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    per_second: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    first: float | None = None
    total = 0
    for when, frames in samples(lines):
        total += 1
        stack = "\n".join(frames)
        name = next((n for n, rule in rules if rule.search(stack)), "other")
        activity[name] += 1
        self_fn[frames[0]] += 1
        cumulative.update(set(frames))
        if when is not None:
            first = when if first is None else first
            per_second[int(when - first)][name.split(" (")[0]] += 1
    if not total:
        sys.exit("no samples on stdin (perf script -F time,ip,sym --comms prism ...)")
    print(f"{total} samples at {hz:g} Hz = {total / hz:.2f} CPU s\n")

    def table(title: str, counts: collections.Counter[str], n: int) -> None:
        print(f"| {title} | share | CPU s |\n|---|---:|---:|")
        for key, count in counts.most_common(n):
            print(f"| `{key}` | {100 * count / total:.1f}% | {count / hz:.2f} |")
        print()

    table("activity", activity, len(activity))
    table("function (self)", self_fn, top)
    skip = ("runtime.goexit", "runtime.mstart", "runtime.systemstack", "golang.org/x/sync")
    table(
        "function (cumulative)",
        collections.Counter({k: v for k, v in cumulative.items() if not k.startswith(skip)}),
        top,
    )
    if timeline:
        print("second | samples | top activities")
        for second in sorted(per_second):
            counts = per_second[second]
            top3 = "; ".join(f"{k}={v}" for k, v in counts.most_common(3))
            print(f"{second} | {sum(counts.values())} | {top3}")


def stream(perf_out: str, hz: int) -> None:
    """One full-size streaming trial, its Prism process recorded by perf from its start."""
    from benchmarks import data
    from benchmarks.kafka_bench import produce, streaming_trial
    from benchmarks.procs import prism_child
    from benchmarks.run import PARTITIONS, Bench, broker, prepare
    from kldrift.local.kafka import create_topics

    work = Path(tempfile.mkdtemp(prefix="prism-profile-"))
    bench = Bench(False, data.FULL, work, ("kafka",))
    stop = threading.Event()
    recorders: list[subprocess.Popen] = []

    def attach() -> None:  # every `kldrift run` the trial starts: perf on its Prism child
        seen: set[int] = set()
        while not stop.is_set():
            for job in _kldrift_runs():
                prism = prism_child(job)
                if prism is not None and prism not in seen:
                    seen.add(prism)
                    cmd = ["perf", "record", "-e", "cpu-clock", "-F", str(hz), "-g"]
                    cmd += ["-p", str(prism), "-o", perf_out]
                    recorders.append(subprocess.Popen(cmd, stderr=subprocess.DEVNULL))
                    print(f"perf recording prism pid {prism} to {perf_out}", flush=True)
            time.sleep(0.05)

    watcher = threading.Thread(target=attach, daemon=True)
    try:
        prepare(bench)
        base = bench.points["base"]
        bootstrap = broker(bench)
        create_topics(bootstrap, {"bench.events": PARTITIONS})
        produce(bootstrap, "bench.events", bench.lines, tail=[data.sentinel(bench.workload)])
        _, keys = data.event_keys_and_times(bench.lines)
        expected = data.data_windows(bench.times, keys, data.SIZE_S, data.PERIOD_S)
        watcher.start()
        result = streaming_trial(
            bootstrap,
            work,
            base.config_data,
            base.baseline,
            "bench.events",
            expected,
            len(bench.lines),
        )
        keep = ("eps", "cpu", "seconds", "startup_s", "reports", "totals")
        print({k: result[k] for k in keep})
    finally:
        stop.set()
        for recorder in recorders:
            recorder.wait(timeout=60)
        if bench.broker is not None:
            bench.broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def _kldrift_runs() -> list[int]:
    """Pids of `python -m kldrift.cli run` processes that are children of this process."""
    import os

    me = str(os.getpid())
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = stat[stat.rindex(")") + 2 :].split()[1]
        if parent == me and b"kldrift.cli" in cmdline and b"run" in cmdline:
            pids.append(int(entry.name))
    return pids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prism_profile", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyse", help="perf script output on stdin -> tables")
    a.add_argument("--hz", type=float, default=499.0, help="perf record -F (samples/s)")
    a.add_argument("--top", type=int, default=20)
    a.add_argument("--timeline", action="store_true", help="also samples per second")
    s = sub.add_parser("stream", help="one 200,000-event streaming trial under perf")
    s.add_argument("--perf-out", required=True)
    s.add_argument("--hz", type=int, default=499)
    args = parser.parse_args(argv)
    if args.command == "analyse":
        analyse(sys.stdin, args.hz, args.top, args.timeline)
    else:
        stream(args.perf_out, args.hz)


if __name__ == "__main__":
    main()
