"""kldrift: streaming KL-divergence drift detection for Apache Beam, reported in bits."""

__version__ = "0.1.0"
