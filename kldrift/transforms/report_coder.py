"""ReportWireCoder: how Score's records (kldrift.schemas.report_wire) cross the runner: MessagePack
through msgspec, typed, so a record decodes to the Struct it was, with a size estimate that does
not encode it.

Without it Beam's default coder pickles each record, and it does so for every element it samples
for its size estimate (a bundle's first ten elements, then fewer), even within a fused stage:
for a block of thousands of reports that was about 16% of a 10,000-key replay's worker CPU
(py-spy, 2026-12-06). Registered for both record types when this module is imported (Score's
output hints are lists of them).
"""

from __future__ import annotations

from typing import Any

import msgspec
from apache_beam import coders
from apache_beam.coders import coder_impl

from kldrift.io.batch_coder import TypeCoder
from kldrift.schemas.report_wire import DriftReportWire, WindowSummaryWire

_FEATURE_REPORT_BYTES = 256
"""Bytes counted for a feature report besides its arrays (its scalars' MessagePack)."""
_PER_BIN = 24
"""Bytes counted per bin of a feature report's arrays (a count, a baseline share, a label)."""
_SUMMARY_BYTES = 256
"""Bytes counted for a window summary."""


class _ReportWireCoderImpl(coder_impl.StreamCoderImpl):
    def __init__(self, record_type: type) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(record_type)
        self._feature_report = record_type is DriftReportWire

    def encode_to_stream(self, value: Any, out: Any, nested: bool) -> None:
        out.write(self._encoder.encode(value), nested)

    def decode_from_stream(self, in_stream: Any, nested: bool) -> Any:
        return self._decoder.decode(in_stream.read_all(nested))

    def estimate_size(self, value: Any, nested: bool = False) -> int:
        """A fixed amount per record, and per bin of a feature report: not its encoding."""
        if self._feature_report:
            return _FEATURE_REPORT_BYTES + _PER_BIN * len(value.counts or ())
        return _SUMMARY_BYTES


class _ReportWireCoder(TypeCoder):
    def _create_impl(self) -> coder_impl.CoderImpl:
        return _ReportWireCoderImpl(self._type)


class DriftReportWireCoder(_ReportWireCoder):
    """A DriftReportWire as typed MessagePack; its size estimated from its bins."""

    _type = DriftReportWire


class WindowSummaryWireCoder(_ReportWireCoder):
    """A WindowSummaryWire as typed MessagePack; its size a fixed estimate."""

    _type = WindowSummaryWire


coders.registry.register_coder(DriftReportWire, DriftReportWireCoder)
coders.registry.register_coder(WindowSummaryWire, WindowSummaryWireCoder)
