"""The replay writer's spills (kldrift.io.files.WriteSortedBlocks' steps run as plain objects on
real files): whatever bundles a runner makes, the output holds every line once, in sort-key order,
through either merge (local files mapped and written with writev, or any filesystem through Beam's
FileSystems), or a single spill renamed into place; and no spill file is left."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from apache_beam.utils.windowed_value import WindowedValue

from kldrift.io import files


def _spill_bundles(prefix: str, bundles: list[list[list[tuple]]]) -> list[str]:
    """Each bundle (a list of blocks of (key, line) pairs) through _SpillBlocks: its spill."""
    spill_step = files._SpillBlocks(prefix, files.pairs_keyed_lines)
    spills = []
    for blocks in bundles:
        spill_step.start_bundle()
        for block in blocks:
            assert list(spill_step.process(block)) == []
        spills.extend(value.value for value in spill_step.finish_bundle())
    return spills


def _bundles(pairs: list[tuple], bundle_count: int, seed: int) -> list[list[list[tuple]]]:
    """`pairs` dealt at random into bundles of blocks of 1-5 pairs."""
    rng = random.Random(seed)
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    bundles: list[list[list[tuple]]] = [[] for _ in range(bundle_count)]
    at = 0
    while at < len(shuffled):
        size = rng.randint(1, 5)
        bundles[rng.randrange(bundle_count)].append(shuffled[at : at + size])
        at += size
    return bundles


def _pairs(count: int, seed: int) -> list[tuple]:
    """Distinct sort keys like replay's (window start, key, feature, revision); lines that name
    their key, of any length (an empty one too) and with non-ASCII bytes."""
    rng = random.Random(seed)
    keys = {
        (rng.randrange(5) * 120_000_000, f"key-{rng.randrange(50)}", rng.choice("ab"), 0)
        for _ in range(count)
    }
    pairs = [(key, f"{key}:{'é' * rng.randrange(300)}".encode()) for key in keys]
    pairs.append(((-1, "", "", 0), b""))
    return pairs


@pytest.mark.parametrize("bundle_count", [2, 3, 7])
@pytest.mark.parametrize("filesystem_path", [False, True])
def test_spills_of_many_bundles_merge_into_every_line_in_key_order(
    tmp_path: Path, bundle_count: int, filesystem_path: bool
) -> None:
    pairs = _pairs(400, seed=bundle_count)
    output = tmp_path / "reports.jsonl"
    prefix = f"{output}.spill-test-"
    spills = _spill_bundles(prefix, _bundles(pairs, bundle_count, seed=bundle_count))
    assert len(spills) > 1
    if filesystem_path:  # the path any non-local filesystem takes, run on local files
        written = files._merge_spills(spills, str(output))
        files.delete_spills(prefix)
    else:
        (written,) = files._WriteSortedSpills(str(output), prefix).process(spills)
    want = b"".join(line + b"\n" for _, line in sorted(pairs))
    assert output.read_bytes() == want
    assert written == len(pairs)
    assert [p.name for p in tmp_path.iterdir()] == ["reports.jsonl"]


def test_one_bundle_spill_is_renamed_into_the_output(tmp_path: Path) -> None:
    pairs = _pairs(200, seed=11)
    output = tmp_path / "reports.jsonl"
    output.write_bytes(b"an older output\n")
    prefix = f"{output}.spill-test-"
    (spill,) = _spill_bundles(prefix, _bundles(pairs, 1, seed=11))
    (written,) = files._WriteSortedSpills(str(output), prefix).process([spill])
    assert output.read_bytes() == b"".join(line + b"\n" for _, line in sorted(pairs))
    assert written == len(pairs)
    assert [p.name for p in tmp_path.iterdir()] == ["reports.jsonl"]


def test_a_bundle_without_lines_spills_nothing(tmp_path: Path) -> None:
    spill_step = files._SpillBlocks(f"{tmp_path}/out.spill-", files.pairs_keyed_lines)
    spill_step.start_bundle()
    assert list(spill_step.process([])) == []
    assert list(spill_step.finish_bundle()) == []
    assert list(tmp_path.iterdir()) == []


def test_write_all_finishes_a_write_that_stopped_short(tmp_path: Path, monkeypatch) -> None:
    """writev may write less than asked (a signal, a full pipe): the rest follows, in order."""
    real_writev = files.os.writev
    calls = []

    def short_writev(fd: int, buffers: list) -> int:
        calls.append(len(buffers))
        # At most 7 bytes per call: cuts inside a buffer and at its end.
        return real_writev(fd, [bytes(b"".join(bytes(b) for b in buffers)[:7])])

    monkeypatch.setattr(files.os, "writev", short_writev)
    data = [b"first line\n", b"\n", b"\xc3\xa9t\xc3\xa9\n", b"x" * 30 + b"\n"]
    path = tmp_path / "out"
    with open(path, "wb") as handle:
        files._write_all(handle.fileno(), [memoryview(d) for d in data])
    assert path.read_bytes() == b"".join(data)
    assert len(calls) == -(-sum(map(len, data)) // 7)


def test_spill_output_is_the_windowed_path(tmp_path: Path) -> None:
    """A spill leaves its bundle as its path in the global window (what Gather collects)."""
    spill_step = files._SpillBlocks(f"{tmp_path}/out.spill-", files.pairs_keyed_lines)
    spill_step.start_bundle()
    list(spill_step.process([((0, "k", "f", 0), b"line")]))
    (value,) = spill_step.finish_bundle()
    assert isinstance(value, WindowedValue)
    assert Path(f"{value.value}.lines").read_bytes() == b"line\n"


def test_one_spill_is_written_through_an_output_that_is_a_link(tmp_path: Path) -> None:
    """A rename would replace the link (or a device such as /dev/stdout) with a file: the lines
    go through it instead, to the file it names."""
    pairs = _pairs(50, seed=5)
    target = tmp_path / "elsewhere" / "reports.jsonl"
    target.parent.mkdir()
    link = tmp_path / "reports.jsonl"
    link.symlink_to(target)
    prefix = f"{link}.spill-test-"
    (spill,) = _spill_bundles(prefix, _bundles(pairs, 1, seed=5))
    (written,) = files._WriteSortedSpills(str(link), prefix).process([spill])
    assert written == len(pairs)
    assert link.is_symlink()
    assert target.read_bytes() == b"".join(line + b"\n" for _, line in sorted(pairs))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "reports.jsonl"]
