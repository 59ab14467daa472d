"""Seeded synthetic events with a known drift: the demo's stream, the tests' and benchmarks' data.

Features: `latency_ms` (gamma), `amount` (log-normal), `country` and `device` (categorical). From
`drift_at` on, latency's scale grows by `drift_size` and country mass moves towards `BR`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COUNTRIES = ["US", "DE", "FR", "GB", "BR"]
COUNTRY_P = np.array([0.45, 0.2, 0.15, 0.15, 0.05])
DEVICES = ["ios", "android", "web"]
DEVICE_P = np.array([0.4, 0.4, 0.2])
LATENCY_EDGES = [0, 5, 10, 20, 50, 100, 250, 1000]


def demo_config(
    *,
    name: str = "demo",
    size: str = "2m",
    period: str = "30s",
    allowed_lateness: str = "30s",
    kafka: dict[str, Any] | None = None,
    baseline: str | None = None,
    features: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A config for the synthetic events (a mapping, as a user would write in YAML); `features`
    replaces the four synthetic features."""
    config: dict[str, Any] = {
        "name": name,
        "event_time_field": "ts",
        "key_field": "model",
        "window": {"size": size, "period": period, "allowed_lateness": allowed_lateness},
        "features": features
        or [
            {"name": "latency_ms", "kind": "numeric", "edges": LATENCY_EDGES},
            {"name": "amount", "kind": "numeric", "bins": 10},
            {"name": "payload.country", "kind": "categorical", "categories": COUNTRIES[:4]},
            {"name": "device", "kind": "categorical", "top_k": 5},
        ],
        "drift": {"smoothing": 0.5, "threshold_bits": 0.05, "significance": 0.01},
    }
    if baseline is not None:
        config["baseline"] = baseline
    if kafka is not None:
        config["kafka"] = kafka
    return config


@dataclass
class SyntheticStream:
    """Events from `start` (epoch s) for `duration` s at `rate` events/s (total, over all keys)."""

    start: float
    duration: float
    rate: float
    keys: list[str] = field(default_factory=lambda: ["model-a", "model-b"])
    drift_at: float | None = None
    """Epoch seconds at which drift starts (None: no drift)."""
    drift_size: float = 1.0
    seed: int = 7

    @property
    def count(self) -> int:
        return int(self.duration * self.rate)

    def event_times(self) -> np.ndarray:
        return self.start + np.arange(self.count) / self.rate

    def events(self) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng(self.seed)
        times = self.event_times()
        drifted = (
            np.zeros(len(times), dtype=bool) if self.drift_at is None else times >= self.drift_at
        )
        for t, is_drifted in zip(times, drifted, strict=True):
            yield make_event(
                rng,
                float(t),
                self.keys[int(rng.integers(len(self.keys)))],
                self.drift_size if is_drifted else 0.0,
            )

    def lines(self) -> Iterator[bytes]:
        for event in self.events():
            yield json.dumps(event).encode()


def make_event(rng: np.random.Generator, t: float, key: str, drift: float) -> dict[str, Any]:
    """One event; `drift` 0 is the training distribution."""
    country_p = COUNTRY_P * (1 - min(drift, 1) * 0.6)
    country_p[-1] += 1 - country_p.sum()
    return {
        "ts": round(t, 6),
        "model": key,
        "latency_ms": round(float(rng.gamma(2.0, 12.0 * (1 + drift))), 3),
        "amount": round(float(rng.lognormal(3.0, 0.8)), 2),
        "payload": {"country": COUNTRIES[int(rng.choice(len(COUNTRIES), p=country_p))]},
        "device": DEVICES[int(rng.choice(len(DEVICES), p=DEVICE_P))],
    }


def training_lines(count: int, start: float = 1_700_000_000.0, seed: int = 1) -> Iterator[bytes]:
    """Training data: the undrifted distribution, one JSON line per event."""
    stream = SyntheticStream(start=start, duration=count / 100.0, rate=100.0, seed=seed)
    return stream.lines()


AVRO_EVENT_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "namespace": "kldrift.synthetic",
    "fields": [
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "model", "type": "string"},
        {"name": "latency_ms", "type": ["null", "double"], "default": None},
        {"name": "amount", "type": ["null", "double"], "default": None},
        {
            "name": "payload",
            "type": {
                "type": "record",
                "name": "Payload",
                "fields": [{"name": "country", "type": ["null", "string"], "default": None}],
            },
        },
        {"name": "device", "type": {"type": "enum", "name": "Device", "symbols": DEVICES}},
    ],
}
"""The synthetic events as an Avro record (event time in microseconds: `avro_record`)."""


def avro_record(event: dict[str, Any]) -> dict[str, Any]:
    """A synthetic event as AVRO_EVENT_SCHEMA's record: `ts` in whole microseconds."""
    return {**event, "ts": round(event["ts"] * 1_000_000)}
