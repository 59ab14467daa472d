"""Decode: raw record batches -> event batches (JSON, event time, key), undecodable records kept
as dead letters in the batch."""

from __future__ import annotations

import apache_beam as beam

from kldrift.events import EventBatch, EventDecoder, RecordBatch
from kldrift.io import batch_coder  # noqa: F401  # registers the batch coders
from kldrift.schemas.config import PipelineConfig


class DecodeRecords(beam.PTransform):
    """RecordBatch -> EventBatch (JSON, event time, key; the config's feature fields as columns);
    undecodable records ride in the batch as dead letters, emitted by the Bin step."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, batches: beam.PCollection[RecordBatch]) -> beam.PCollection[EventBatch]:
        decoder = EventDecoder(self._config)
        return batches | "Decode" >> beam.Map(decoder.decode_columns).with_output_types(EventBatch)
