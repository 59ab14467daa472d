"""HistogramCoder and KeyBlockCoder: count arrays, CountsWithOthers, key blocks and None cross the
runner exactly (checked against bytes built here with struct), anything else is refused; and the
pipeline's count-carrying steps use KeyBlockCoder while their keys keep deterministic coders."""

from __future__ import annotations

import struct
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
from apache_beam import coders

from kldrift.key_blocks import KeyBlock
from kldrift.other_values import CountsWithOthers
from kldrift.transforms.histogram_coder import HistogramCoder, HistogramHint, KeyBlockCoder
from kldrift.transforms.panes import SumCounts

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _round_trip(value: object) -> object:
    coder = HistogramCoder()
    plain = coder.decode(coder.encode(value))
    # Nested (length-prefixed) inside a tuple, as in a (key, counts) element.
    pair = coders.TupleCoder([coders.StrUtf8Coder(), coder])
    key, nested = pair.decode(pair.encode(("k", value)))
    assert key == "k"
    _assert_same(nested, plain)
    return plain


def _assert_same(got: object, want: object) -> None:
    if want is None:
        assert got is None
        return
    if isinstance(want, CountsWithOthers):
        assert type(got) is CountsWithOthers
        _assert_same(got.counts, want.counts)
        assert got.others == want.others
        assert [list(v.items()) for v in got.others.values()] == [
            list(v.items()) for v in want.others.values()
        ]
        assert list(got.others) == list(want.others)
        assert all(type(v) is Counter for v in got.others.values())
        return
    assert type(got) is np.ndarray
    assert got.dtype == np.int64
    assert got.shape == want.shape  # type: ignore[attr-defined]
    assert got.tolist() == want.tolist()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "counts",
    [
        [],
        [0],
        [3, 0, 7, 1, 0, 0, 12],
        [INT64_MAX, INT64_MAX - 1, 0, INT64_MIN, -1, 2**40],
    ],
    ids=["empty", "one", "small", "near-int64-limits"],
)
def test_int64_arrays_round_trip_exactly(counts: list[int]) -> None:
    value = np.array(counts, dtype=np.int64)

    decoded = _round_trip(value)

    _assert_same(decoded, value)


def test_array_bytes_are_a_tag_then_little_endian_int64() -> None:
    value = np.array([1, INT64_MAX, -2], dtype=np.int64)

    encoded = HistogramCoder().encode(value)

    assert encoded == b"\x01" + struct.pack("<3q", 1, INT64_MAX, -2)


def test_decoded_counts_are_writeable_and_sum() -> None:
    coder = HistogramCoder()
    first = coder.decode(coder.encode(np.array([1, 2, 3], dtype=np.int64)))
    second = coder.decode(coder.encode(np.array([10, 20, 30], dtype=np.int64)))

    # SumCounts adds into a merged accumulator in place: a read-only buffer would raise here.
    total = SumCounts().merge_accumulators([first, second])

    assert total.tolist() == [11, 22, 33]


def test_a_strided_view_is_encoded_as_its_values() -> None:
    rows = np.arange(12, dtype=np.int64).reshape(3, 4)

    decoded = _round_trip(rows[:, 1])

    assert decoded.tolist() == [1, 5, 9]  # type: ignore[attr-defined]


def test_none_round_trips() -> None:
    assert HistogramCoder().encode(None) == b"\x00"
    assert _round_trip(None) is None


def test_counts_with_unicode_other_values_round_trip_in_order() -> None:
    others = {
        "city": Counter({"Zürich": 3, "東京": 1, "São Paulo": 2, "🙂": INT64_MAX}),
        "device": Counter({"lone \ud800 surrogate": 1, "": 4}),
        "empty": Counter(),
    }
    value = CountsWithOthers(np.array([5, 0, INT64_MAX, 9], dtype=np.int64), others)

    decoded = _round_trip(value)

    _assert_same(decoded, value)
    assert list(decoded.others["city"]) == ["Zürich", "東京", "São Paulo", "🙂"]  # type: ignore[attr-defined]


def test_counts_with_others_bytes_follow_the_documented_layout() -> None:
    value = CountsWithOthers(np.array([2, 1], dtype=np.int64), {"c": Counter({"é": 1})})

    encoded = HistogramCoder().encode(value)

    text = "é".encode()
    assert encoded == (
        b"\x02"
        + struct.pack("<I2q", 2, 2, 1)
        + struct.pack("<I", 1)
        + struct.pack("<I", 1)
        + b"c"
        + struct.pack("<I", 1)
        + struct.pack("<I", len(text))
        + text
        + struct.pack("<q", 1)
    )


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (np.array([1.5, 2.0]), "dtype float64"),
        (np.array([1, 2], dtype=np.int32), "dtype int32"),
        (np.array([1, 2], dtype=np.uint64), "dtype uint64"),
        (np.zeros((2, 3), dtype=np.int64), "shape (2, 3)"),
        ([1, 2, 3], "list"),
        ({"a": 1}, "dict"),
        (7, "int"),
        (CountsWithOthers(np.array([1.0]), {}), "dtype float64"),
        (CountsWithOthers(np.array([1], dtype=np.int64), {"c": {"x": 1}}), "Counter"),
        (CountsWithOthers(np.array([1], dtype=np.int64), {"c": Counter({3: 1})}), "str"),
        (CountsWithOthers(np.array([1], dtype=np.int64), {"c": Counter({"x": 1.5})}), "int"),
        (CountsWithOthers(np.array([1], dtype=np.int64), {"c": Counter({"x": 2**63})}), "int64"),
    ],
    ids=[
        "float-array",
        "int32-array",
        "uint64-array",
        "2-d-array",
        "list",
        "dict",
        "int",
        "float-counts",
        "plain-dict-others",
        "int-other-value",
        "float-other-count",
        "other-count-beyond-int64",
    ],
)
def test_anything_else_is_refused_naming_what_it_is(value: object, named: str) -> None:
    with pytest.raises((TypeError, ValueError), match="HistogramCoder") as refused:
        HistogramCoder().encode(value)

    assert named in str(refused.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00", b"\x01\x00\x00\x00", b"\x07", b"\x02" + struct.pack("<I", 5) + b"\x00"],
    ids=["empty", "none-with-trailing", "partial-int64", "unknown-tag", "counts-cut-short"],
)
def test_bytes_that_are_no_histogram_are_refused(data: bytes) -> None:
    with pytest.raises((ValueError, struct.error)):
        HistogramCoder().decode(data)


def test_the_hint_stands_for_histograms_and_none_only() -> None:
    assert isinstance(np.zeros(2, dtype=np.int64), HistogramHint)
    assert isinstance(CountsWithOthers(np.zeros(1, dtype=np.int64), {}), HistogramHint)
    assert isinstance(None, HistogramHint)
    assert not isinstance([1, 2], HistogramHint)
    assert coders.registry.get_coder(HistogramHint) == HistogramCoder()
    # Users' own types keep Beam's coders: numpy arrays are not claimed.
    assert not isinstance(coders.registry.get_coder(np.ndarray), HistogramCoder)


def _pcollection_coders(pipeline: beam.Pipeline) -> dict[str, beam.coders.Coder]:
    proto, context = pipeline.to_runner_api(return_context=True)
    found = {}
    for transform in proto.components.transforms.values():
        if transform.subtransforms:
            continue
        for tag, pcollection_id in transform.outputs.items():
            coder_id = proto.components.pcollections[pcollection_id].coder_id
            found[f"{transform.unique_name}[{tag}]"] = context.coders.get_by_id(coder_id)
    return found


def test_the_count_steps_use_it_and_keys_stay_deterministic() -> None:
    from kldrift.schemas.config import parse_config
    from kldrift.training import baseline_from_events
    from kldrift.transforms.batches import SlidingKLFromBatches

    config = parse_config(
        {
            "name": "shop",
            "event_time_field": "ts",
            "key_field": "model",
            "window": {"size": "60s", "period": "20s"},
            "features": [{"name": "country", "kind": "categorical", "categories": ["de"]}],
        }
    )
    baseline = baseline_from_events(config, [{"country": "de"}] * 10)
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([]) | "K" >> SlidingKLFromBatches(config, baseline)

    found = _pcollection_coders(pipeline)

    def coder(step: str) -> beam.coders.Coder:
        (name,) = [n for n in found if n.startswith(f"K/{step}")]
        return found[name]

    pane_counts = coder("Bin/ParDo(BinPanes)[None]")
    assert pane_counts.value_coder() == KeyBlockCoder()
    for step in ("PaneToWindows", "SlidingHistograms/Window", "PaneHistograms/Window"):
        assert coder(step).value_coder() == KeyBlockCoder(), step
        assert coder(step).key_coder().is_deterministic(), step
    stamped = coder("ReviseWindows")
    assert stamped.key_coder().is_deterministic()
    assert stamped.value_coder() == coders.TupleCoder([KeyBlockCoder(), coders.BooleanCoder()])
    assert coder("Revise[") == coders.TupleCoder(
        [stamped.key_coder(), KeyBlockCoder(), coders.ListCoder(coders.VarIntCoder())]
    )


def test_runtime_type_checks_accept_the_steps_values() -> None:
    from apache_beam.typehints import typehints

    from kldrift.transforms.bin import PANE_COUNTS
    from kldrift.transforms.revise import REVISION, STAMPED_DELTA

    block = KeyBlock(["de", None], np.array([[1, 0, 2], [0, 0, 1]], dtype=np.int64), {})
    # As a pipeline run with --runtime_type_check checks each element: no error means accepted.
    typehints.check_constraint(PANE_COUNTS, (3, block))
    typehints.check_constraint(STAMPED_DELTA, ((3, 60_000_000), (None, True)))
    typehints.check_constraint(REVISION, ((0, 60_000_000), block, [0, 2]))
    with pytest.raises(TypeError):
        typehints.check_constraint(PANE_COUNTS, (3, np.array([1, 0, 2])))


def test_key_blocks_cross_exactly_as_their_documented_bytes() -> None:
    counts = np.array([[1, INT64_MAX, 0], [INT64_MIN, 5, -1]], dtype=np.int64)
    block = KeyBlock(["de", None], counts, {None: {"country": Counter({"x\ud800": 2, "y": 1})}})
    text = "x\ud800".encode("utf-8", "surrogatepass")
    want = b"".join(
        [
            b"\x03",
            struct.pack("<II", 2, 3),
            struct.pack("<I", 2) + b"de",
            struct.pack("<I", 0xFFFFFFFF),
            struct.pack("<6q", 1, INT64_MAX, 0, INT64_MIN, 5, -1),
            struct.pack("<II", 1, 1),  # one key with other values: row 1
            struct.pack("<II", 1, 7) + b"country",
            struct.pack("<I", 2),
            struct.pack("<I", len(text)) + text + struct.pack("<q", 2),
            struct.pack("<I", 1) + b"y" + struct.pack("<q", 1),
        ]
    )
    coder = KeyBlockCoder()
    assert coder.encode(block) == want
    got = coder.decode(want)
    assert got == block and type(got.others[None]["country"]) is Counter
    assert got.counts.dtype == np.int64 and got.counts.flags.writeable
    assert coder.decode(coder.encode(None)) is None
    pair = coders.TupleCoder([coders.VarIntCoder(), coder])
    assert pair.decode(pair.encode((7, block))) == (7, block)


@pytest.mark.parametrize(
    "value",
    [
        np.array([1, 2], dtype=np.int64),
        KeyBlock(["a"], np.array([[1.0, 2.0]]), {}),
        KeyBlock(["a", "b"], np.array([[1, 2]], dtype=np.int64), {}),
    ],
)
def test_the_key_block_coder_refuses_what_is_not_a_block(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        KeyBlockCoder().encode(value)
