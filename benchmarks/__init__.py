"""kldrift benchmarks: `python -m benchmarks.run [--quick] [--json OUT]` (see benchmarks/README.md).

Every figure comes from one run on one machine over the same seeded synthetic events
(kldrift.synthetic), so the figures can be compared with each other.
"""
