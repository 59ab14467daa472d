"""Beam transforms: the SlidingKLDivergence composite and its steps."""

from kldrift.transforms.sliding_kl import (
    DEAD_LETTERS,
    REPORTS,
    DecodeRecords,
    SlidingKLDivergence,
    SumCounts,
)

__all__ = ["DEAD_LETTERS", "REPORTS", "DecodeRecords", "SlidingKLDivergence", "SumCounts"]
