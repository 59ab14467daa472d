"""RecordBatchCoder and EventBatchCoder: how a batch of records or events crosses the runner
(pickled, as Beam's default coder would), with a size estimate that does not encode it.

Beam estimates the size of elements it samples (all of a bundle's first ten, then fewer) by
encoding them: for a batch of thousands of events that costs about as much as decoding them.
Within a fused stage nothing else encodes a batch, so the estimate is most of what a batch costs
between the reader, the decoder and the binning step. Registered for the two types (the hints the
steps declare) when this module is imported.
"""

from __future__ import annotations

import pickle
from typing import Any

from apache_beam import coders
from apache_beam.coders import coder_impl
from apache_beam.coders.coders import FastCoder

from kldrift.events import EventBatch, RecordBatch

_PER_RECORD = 16
"""Bytes counted per record beside its value (its offset, its key, its time)."""
_NOT_BYTES = 64
"""Bytes counted for a record value that is not bytes (a parsed event, a tombstone)."""


class _BatchCoderImpl(coder_impl.StreamCoderImpl):
    def encode_to_stream(self, value: Any, out: Any, nested: bool) -> None:
        out.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), nested)

    def decode_from_stream(self, in_stream: Any, nested: bool) -> Any:
        return pickle.loads(in_stream.read_all(nested))

    def estimate_size(self, value: Any, nested: bool = False) -> int:
        """The batch's record values' bytes, and a fixed amount per record: not its encoding."""
        values = value.values
        if all(type(v) is bytes for v in values):
            return sum(map(len, values)) + _PER_RECORD * len(values)
        return (_NOT_BYTES + _PER_RECORD) * len(values)


class TypeCoder(FastCoder):
    """A coder of one Python type (`_type`, the hint it is registered for): not deterministic,
    equal to any coder of its class. Subclasses give the implementation (`_create_impl`)."""

    _type: type

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return self._type

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class _BatchCoder(TypeCoder):
    def _create_impl(self) -> coder_impl.CoderImpl:
        return _BatchCoderImpl()


class RecordBatchCoder(_BatchCoder):
    """A kldrift.events.RecordBatch, pickled; its size estimated from its values."""

    _type = RecordBatch


class EventBatchCoder(_BatchCoder):
    """A kldrift.events.EventBatch, pickled; its size estimated from its records' values."""

    _type = EventBatch


coders.registry.register_coder(RecordBatch, RecordBatchCoder)
coders.registry.register_coder(EventBatch, EventBatchCoder)
