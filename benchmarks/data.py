"""The benchmark workload: seeded events, configs and baselines, shared by every figure.

Events come from kldrift.synthetic.SyntheticStream (2 keys; numeric `latency_ms`, `amount`,
categorical `payload.country`, `device`; drift injected at the midpoint). Every bin is fixed in the
config (edges and categories), so baselines are counted here with FeatureBins from seeded training
data instead of running `kldrift baseline` (a Beam job) once per scaling point.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kldrift.binning import FeatureBins
from kldrift.events import field_getter
from kldrift.schemas.baseline import Baseline, FeatureBaseline
from kldrift.synthetic import (
    COUNTRIES,
    DEVICES,
    LATENCY_EDGES,
    SyntheticStream,
    demo_config,
    training_lines,
)

START_S = 1_699_999_800.0
"""Event time of the first event: a multiple of 600 s, so every window size used is aligned."""
RATE = 100.0
"""Events per second of event time (over both keys): a 60 s window holds 6,000 events."""
SIZE_S = 60
PERIOD_S = 10
LATENESS_S = 30
MAX_DELAY_S = 2
IDLE_TIMEOUT_S = 5
SEED = 7
TRAINING_EVENTS = 20_000
AMOUNT_EDGES = [5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 100.0, 200.0]
"""10 bins for `amount` (log-normal, median ~20)."""
REPLICAS = 12
"""Wide events carry 12 renamed copies of the 4 features: up to 52 feature fields."""
SENTINEL_KEY = "bench-sentinel"


@dataclass(frozen=True)
class Workload:
    """How much data one benchmark run uses."""

    events: int
    trials: int
    live_s: float
    live_rate: float = 200.0

    @property
    def duration_s(self) -> float:
        return self.events / RATE

    @property
    def end_s(self) -> float:
        return START_S + self.duration_s

    @property
    def drift_at_s(self) -> float:
        return START_S + self.duration_s / 2


QUICK = Workload(events=20_000, trials=1, live_s=30.0)
SMOKE = Workload(events=5_000, trials=1, live_s=15.0)
"""The test suite's run (tests/e2e/test_benchmarks_smoke.py): every section and figure of quick,
on less data; its figures are too small to quote."""
FULL = Workload(events=200_000, trials=3, live_s=300.0)


def stream(workload: Workload) -> SyntheticStream:
    return SyntheticStream(
        start=START_S,
        duration=workload.duration_s,
        rate=RATE,
        drift_at=workload.drift_at_s,
        drift_size=1.0,
        seed=SEED,
    )


def base_features() -> list[dict[str, Any]]:
    return [
        {"name": "latency_ms", "kind": "numeric", "edges": list(LATENCY_EDGES)},
        {"name": "amount", "kind": "numeric", "edges": list(AMOUNT_EDGES)},
        {"name": "payload.country", "kind": "categorical", "categories": COUNTRIES[:4]},
        {"name": "device", "kind": "categorical", "categories": list(DEVICES)},
    ]


def _replica_names(replica: int) -> list[str]:
    return [
        f"latency_ms_r{replica}",
        f"amount_r{replica}",
        f"country_r{replica}",
        f"device_r{replica}",
    ]


def wide_features(count: int) -> list[dict[str, Any]]:
    """`count` features: the 4 base ones, then renamed copies (same bins, other field names)."""
    features = base_features()
    for replica in range(1, REPLICAS + 1):
        for spec, name in zip(base_features(), _replica_names(replica), strict=True):
            features.append({**spec, "name": name})
    if count > len(features):
        raise ValueError(f"at most {len(features)} features")
    return features[:count]


def widen(event: dict[str, Any]) -> dict[str, Any]:
    """The event with every replica field (a copy of the base feature's value) added."""
    wide = dict(event)
    values = [event["latency_ms"], event["amount"], event["payload"]["country"], event["device"]]
    for replica in range(1, REPLICAS + 1):
        wide.update(zip(_replica_names(replica), values, strict=True))
    return wide


def numeric_edges(values: Sequence[float], bins: int) -> list[float]:
    """`bins - 1` strictly increasing edges, log-spaced between the 0.1% and 99.9% quantiles."""
    low, high = np.quantile(np.asarray(values, dtype=np.float64), [0.001, 0.999])
    return [float(e) for e in np.geomspace(max(low, 1e-3), high, bins - 1)]


def binned_features(bins: int, training: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The base features with `bins` bins for each numeric feature (categorical unchanged)."""
    features = base_features()
    for spec in features:
        if spec["kind"] == "numeric":
            values = [e[spec["name"]] for e in training]
            spec["edges"] = numeric_edges(values, bins)
    return features


def config(
    *,
    name: str = "bench",
    size_s: int = SIZE_S,
    period_s: int = PERIOD_S,
    features: list[dict[str, Any]] | None = None,
    baseline: str | None = None,
    kafka: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pipeline config mapping, as a user would write it."""
    return demo_config(
        name=name,
        size=f"{size_s}s",
        period=f"{period_s}s",
        allowed_lateness=f"{LATENESS_S}s",
        kafka=kafka,
        baseline=baseline,
        features=features or base_features(),
    )


def training_events() -> list[dict[str, Any]]:
    """Seeded undrifted training events, widened (so every replica feature has a baseline)."""
    return [widen(json.loads(line)) for line in training_lines(TRAINING_EVENTS, seed=1)]


def build_baseline(features: list[dict[str, Any]], training: list[dict[str, Any]]) -> Baseline:
    """Count the training events with kldrift's own binning; bins are those of the config."""
    counted = []
    for spec in features:
        if spec["kind"] == "numeric":
            bins = FeatureBins.numeric(spec["name"], spec["edges"])
        else:
            bins = FeatureBins.categorical(spec["name"], spec["categories"])
        get = field_getter(spec["name"])
        counts = bins.count([get(e) for e in training])
        counted.append(
            FeatureBaseline(
                name=spec["name"],
                kind=spec["kind"],
                edges=[float(e) for e in spec["edges"]] if spec["kind"] == "numeric" else None,
                categories=list(spec["categories"]) if spec["kind"] == "categorical" else None,
                counts=[int(c) for c in counts[: bins.n_bins]],
                missing=int(counts[bins.missing_slot]),
                invalid=int(counts[bins.invalid_slot]),
            )
        )
    return Baseline.create(counted, source="benchmarks.data", created_at="2024-01-01T00:00:00Z")


def write_baseline(path: Path, features: list[dict[str, Any]], training: list[dict]) -> Path:
    path.write_text(build_baseline(features, training).model_dump_json(indent=1) + "\n")
    return path


def write_lines(path: Path, lines: Iterable[bytes]) -> int:
    count = 0
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line + b"\n")
            count += 1
    return count


def read_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line]


def sentinel(workload: Workload) -> bytes:
    """An event far enough past the data that its arrival moves the watermark past every data
    window's end (+ max_delay), so the last data windows close without waiting for the idle rule.
    Its own key keeps its windows apart from the data's."""
    event = json.loads(next(stream(workload).lines()))
    event["ts"] = workload.end_s + SIZE_S + LATENESS_S + 10 * PERIOD_S
    event["model"] = SENTINEL_KEY
    return json.dumps(event).encode()


def data_windows(times: np.ndarray, keys: Sequence[str], size_s: int, period_s: int) -> set:
    """{(key, window start in s)} of every sliding window holding at least one event."""
    panes = {(k, int(t // period_s) * period_s) for t, k in zip(times, keys, strict=True)}
    ratio = size_s // period_s
    return {(k, start - i * period_s) for k, start in panes for i in range(ratio)}


def event_keys_and_times(lines: Sequence[bytes]) -> tuple[np.ndarray, list[str]]:
    events = [json.loads(line) for line in lines]
    return np.array([e["ts"] for e in events]), [e["model"] for e in events]


def split_keys(lines: Sequence[bytes], keys: int) -> Iterator[bytes]:
    """The events with key_field (`model`) rewritten round-robin to `keys` values."""
    for index, line in enumerate(lines):
        event = json.loads(line)
        event["model"] = f"key-{index % keys}"
        yield json.dumps(event).encode()
