"""The replay writer's spills (kldrift.io.files.WriteSortedBlocks' steps run as plain objects on
real files): whatever bundles a runner makes, the output holds every line once, in sort-key order,
through the merge of several spills or a single spill renamed into place, for a local output
(mapped and written with writev) and one behind a URL (Beam's FileSystems: `kldtest://`, a
filesystem of this module over a local folder); and no spill file is left."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.localfilesystem import LocalFileSystem
from apache_beam.utils.windowed_value import WindowedValue

from kldrift.io import files


class _UrlFileSystem(LocalFileSystem):
    """`kldtest://PATH` is the local PATH, seen through Beam's FileSystems as a URL would be."""

    @classmethod
    def scheme(cls) -> str:
        return "kldtest"

    @staticmethod
    def _local(path: str) -> str:
        return path.removeprefix("kldtest://")

    def create(self, path, mime_type="application/octet-stream", compression_type=None):  # type: ignore[no-untyped-def]
        return super().create(
            self._local(path), mime_type, compression_type or CompressionTypes.AUTO
        )

    def open(self, path, mime_type="application/octet-stream", compression_type=None):  # type: ignore[no-untyped-def]
        return super().open(self._local(path), mime_type, compression_type or CompressionTypes.AUTO)

    def rename(self, sources, destinations):  # type: ignore[no-untyped-def]
        super().rename([self._local(p) for p in sources], [self._local(p) for p in destinations])

    def match(self, patterns, limits=None):  # type: ignore[no-untyped-def]
        return super().match([self._local(p) for p in patterns], limits)

    def delete(self, paths):  # type: ignore[no-untyped-def]
        super().delete([self._local(p) for p in paths])


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


@pytest.mark.parametrize("bundle_count", [1, 2, 3, 7])
@pytest.mark.parametrize("scheme", ["", "kldtest://"])
def test_spills_of_any_bundles_give_every_line_in_key_order(
    tmp_path: Path, bundle_count: int, scheme: str
) -> None:
    pairs = _pairs(400, seed=bundle_count)
    output = tmp_path / "reports.jsonl"
    output.write_bytes(b"an older output\n")
    prefix = f"{scheme}{output}.spill-test-"
    spills = _spill_bundles(prefix, _bundles(pairs, bundle_count, seed=bundle_count))
    assert len(spills) == bundle_count
    (written,) = files._WriteSortedSpills(f"{scheme}{output}", prefix).process(spills)
    want = b"".join(line + b"\n" for _, line in sorted(pairs))
    assert output.read_bytes() == want
    assert written == len(pairs)
    assert [p.name for p in tmp_path.iterdir()] == ["reports.jsonl"]


def test_a_block_whose_lines_do_not_match_its_keys_is_refused(tmp_path: Path) -> None:
    """A line holding a newline would be two lines: an error, not a shifted output."""
    spill_step = files._SpillBlocks(f"{tmp_path}/out.spill-", files.pairs_keyed_lines)
    spill_step.start_bundle()
    with pytest.raises(ValueError, match="2 sort keys has 3 lines"):
        spill_step.process([((0, "a", "f", 0), b"one"), ((0, "b", "f", 0), b"two\nthree")])


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


@pytest.mark.parametrize(
    "odd_key",
    [(0, "key-\udcff", "a", 0), (2**70, "key", "a", 0)],
    ids=["lone-surrogate", "big-int"],
)
def test_keys_messagepack_cannot_hold_are_pickled_and_merged_in_order(
    tmp_path: Path, odd_key: tuple
) -> None:
    """A spill's sort keys are written as MessagePack, or pickled when it cannot hold them (a key
    with a lone surrogate, an int past 64 bits): the merge orders both kinds of spill alike."""
    pairs = [*_pairs(120, seed=9), (odd_key, b"the odd one")]
    output = tmp_path / "reports.jsonl"
    prefix = f"{output}.spill-test-"
    spills = _spill_bundles(prefix, _bundles(pairs, 3, seed=9))
    assert {_keys_encoding(spill) for spill in spills} == {b"m", b"p"}
    (written,) = files._WriteSortedSpills(str(output), prefix).process(spills)
    assert written == len(pairs)
    assert output.read_bytes() == b"".join(line + b"\n" for _, line in sorted(pairs))


def _keys_encoding(spill: str) -> bytes:
    """The byte before a spill index's keys: b"m" (MessagePack) or b"p" (pickle)."""
    data = Path(f"{spill}.index").read_bytes()
    count = int.from_bytes(data[:8], "little")
    return data[8 * (count + 1) : 8 * (count + 1) + 1]
