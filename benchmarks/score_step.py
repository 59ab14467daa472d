"""The Score step's cost per report, in process (issue 27): the keys section's windows (100,000
events split round-robin over K keys, 2 features, window 600 s every 120 s) scored by the job's
Score DoFn, a bundle at a time, then written as replay writes them (a sort key and a JSON line
per record). CPU seconds (time.process_time) of this process; no Beam runner, no Prism.

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.score_step --keys 10000 [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import time
from typing import Any

import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from benchmarks import data
from kldrift.binning import resolve_bins, value_getter
from kldrift.key_blocks import KeyBlock, shard_of
from kldrift.pipeline.replay import keyed_lines
from kldrift.schemas.config import parse_config
from kldrift.transforms.score import Score

EVENTS = 100_000
SIZE_S, PERIOD_S = 600, 120
PANE = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)


def elements(keys: int) -> tuple[Score, list[tuple[Any, KeyBlock, list[int]]]]:
    """The Score DoFn of the keys section's config and baseline, and its input: one element per
    (shard of keys, window start), each key's counts of that window (keys with data only)."""
    features = data.base_features()[:2]
    baseline = data.build_baseline(features, data.training_events())
    config = parse_config(
        data.config(name=f"bench-keys_{keys}", features=features, size_s=SIZE_S, period_s=PERIOD_S)
    )
    bins = resolve_bins(config, baseline)
    lines = list(data.split_keys(list(data.stream(data.FULL).lines())[:EVENTS], keys))
    events = [json.loads(line) for line in lines]
    key_index = np.array([int(e["model"].split("-")[1]) for e in events])
    pane = (np.array([e["ts"] for e in events]) // PERIOD_S).astype(np.int64)
    first = int(pane.min()) - SIZE_S // PERIOD_S + 1
    n_windows = int(pane.max()) - first + 1
    ratio = SIZE_S // PERIOD_S
    # Each event in the `ratio` windows that hold it: group = key x windows + window.
    group = np.concatenate([key_index * n_windows + (pane - i - first) for i in range(ratio)])
    counts = np.concatenate(
        [
            b.count_groups([value_getter(b)(e) for e in events] * ratio, group, keys * n_windows)
            for b in bins
        ],
        axis=1,
    ).reshape(keys, n_windows, -1)
    shards = np.array([shard_of(f"key-{k}") for k in range(keys)])
    items = []
    for w in range(n_windows):
        start_us = (first + w) * PERIOD_S * 1_000_000
        for shard in range(16):
            rows = np.flatnonzero((shards == shard) & (counts[:, w].sum(axis=1) > 0))
            if len(rows):
                block = KeyBlock([f"key-{k}" for k in rows], counts[rows, w].copy(), {})
                items.append(((shard, start_us), block, [0] * len(rows)))
    return Score(config, bins, baseline), items


def run_once(score: Score, items: list[Any]) -> tuple[float, float, int, list[bytes]]:
    """(Score CPU s, lines CPU s, reports, texts) of one pass over `items` (one bundle): each
    block's lines as replay's spill step gets them (sort keys, and one text of lines)."""
    started = time.process_time()
    score.setup()
    score.start_bundle()
    outputs: list[Any] = []
    for element in items:
        outputs.extend(score.process(element, Timestamp(0), GlobalWindow(), PANE))
    outputs.extend(score.finish_bundle())
    scored = time.process_time()
    texts: list[bytes] = []
    reports = 0
    for output in outputs:
        is_report = isinstance(output, WindowedValue)
        records = (output if is_report else output.value).value
        reports += len(records) if is_report else 0
        texts.append(keyed_lines(records)[1])
    written = time.process_time()
    return scored - started, written - scored, reports, texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="cProfile one pass: top 25")
    parser.add_argument("--lines", help="write the pass's JSON lines here (to compare commits)")
    args = parser.parse_args(argv)
    score, items = elements(args.keys)
    windows = sum(len(block) for _, block, _ in items)
    print(
        f"K = {args.keys:,}: {windows:,} windows in {len(items):,} blocks; load {os.getloadavg()}"
    )
    run_once(score, items[:50])  # warm-up
    trials = [run_once(score, items) for _ in range(args.trials)]
    reports = trials[0][2]
    for name, index in (("score", 0), ("lines", 1)):
        seconds = statistics.median(t[index] for t in trials)
        print(f"{name}: {seconds:.2f} CPU s, {seconds / reports * 1e6:.1f} us per report")
    total = statistics.median(t[0] + t[1] for t in trials)
    print(f"total: {total:.2f} CPU s, {total / reports * 1e6:.1f} us per report ({reports:,})")
    if args.lines:
        with open(args.lines, "wb") as handle:
            lines = (line for text in trials[0][3] for line in text.splitlines(keepends=True))
            handle.writelines(sorted(lines))
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run_once, score, items)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
