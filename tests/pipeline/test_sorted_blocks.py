"""WriteSortedBlocks, the replay's report writer: blocks of (sort key, line) pairs from several
bundles come out as one file sorted by key, and no spill file is left beside it."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam

from kldrift.io.files import WriteSortedBlocks
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options


def test_blocks_from_many_bundles_are_written_sorted_and_the_spills_deleted(tmp_path: Path) -> None:
    keys = [
        (start, key, feature) for start in (0, 60) for key in ("b", "a", "") for feature in "yx"
    ]
    # Blocks of three pairs each, out of order: the lines say their key, so order is checkable.
    pairs = [(k, f"{k[0]} {k[1]!r} {k[2]}".encode()) for k in reversed(keys)]
    blocks = [pairs[i : i + 3] for i in range(0, len(pairs), 3)]
    output = tmp_path / "reports.jsonl"
    with beam.Pipeline(options=pipeline_options(local_runner_args([]), streaming=False)) as p:
        _ = p | beam.Create(blocks, reshuffle=True) | WriteSortedBlocks(str(output))
    want = [f"{k[0]} {k[1]!r} {k[2]}" for k in sorted(keys)]
    assert output.read_text().splitlines() == want
    assert [f.name for f in tmp_path.iterdir()] == ["reports.jsonl"]


def test_no_blocks_write_an_empty_file(tmp_path: Path) -> None:
    output = tmp_path / "reports.jsonl"
    with beam.Pipeline(options=pipeline_options(local_runner_args([]), streaming=False)) as p:
        _ = p | beam.Create([[]]) | WriteSortedBlocks(str(output))
    assert output.read_bytes() == b""
    assert [f.name for f in tmp_path.iterdir()] == ["reports.jsonl"]
