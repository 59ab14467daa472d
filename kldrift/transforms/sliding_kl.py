"""Stub until the public composite lands: SlidingKLDivergence is SlidingKLFromBatches for now."""

from kldrift.transforms.batches import DEAD_LETTERS, REPORTS
from kldrift.transforms.batches import SlidingKLFromBatches as SlidingKLDivergence
from kldrift.transforms.decode import DecodeRecords
from kldrift.transforms.panes import SumCounts

__all__ = ["DEAD_LETTERS", "REPORTS", "DecodeRecords", "SlidingKLDivergence", "SumCounts"]
