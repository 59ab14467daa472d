"""Beam transforms: SlidingKLDivergence (sliding_kl: any PCollection of events) and its steps, one
module per step (decode, bin, panes, sliding, revise, score); batches wires the steps behind the
Kafka and file sources (SlidingKLFromBatches)."""

from kldrift.transforms.decode import DecodeRecords
from kldrift.transforms.outputs import DEAD_LETTERS, REPORTS
from kldrift.transforms.panes import SumCounts
from kldrift.transforms.sliding_kl import SlidingKLDivergence

__all__ = ["DEAD_LETTERS", "REPORTS", "DecodeRecords", "SlidingKLDivergence", "SumCounts"]
