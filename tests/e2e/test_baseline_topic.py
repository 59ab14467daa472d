"""Baselines from a compacted Kafka topic (`baseline: kafka://TOPIC`): read at start, and swapped on
a running job without a restart when a newer one is published; baselines with other bins, or
records that are not baselines, are rejected and the job keeps the one it has. Real broker, Prism.
Also: baseline locations read through Beam's FileSystems, and their errors."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from _jobs import (
    STOPPED_BY_CTRL_C,
    LiveEvents,
    ReportTail,
    job_kafka,
    run_cli,
    streaming_job,
    wait_for,
)
from kafka import KafkaProducer
from scipy.stats import entropy

from kldrift.io.baselines import BaselineTopic, publish_baseline, read_baseline
from kldrift.local.kafka import create_topics
from kldrift.schemas.baseline import Baseline, BaselineError, FeatureBaseline
from kldrift.schemas.config import KafkaSpec
from kldrift.synthetic import LATENCY_EDGES, demo_config

SIZE_S, PERIOD_S = 4, 2
SMOOTHING = 0.5
REFRESH_S = 1.0


def _baseline(counts: list[int], edges: list[float] = LATENCY_EDGES) -> Baseline:
    feature = FeatureBaseline(name="latency_ms", kind="numeric", edges=edges, counts=counts)
    return Baseline.create([feature], source="test", created_at="2026-11-25T00:00:00Z")


# Same bins, very different shapes: a window's KL tells which one scored it.
BASELINE_A = _baseline([5, 60, 120, 200, 350, 200, 50, 15, 1])
BASELINE_B = _baseline([400, 300, 150, 80, 40, 20, 8, 2, 1])
OTHER_BINS = _baseline([1, 2, 3, 4], edges=[0, 10, 100])


def _kafka(bootstrap: str, run_id: str) -> dict:
    return job_kafka(
        bootstrap, "swap", run_id, start_from="earliest", max_delay="500ms", idle_timeout="2s"
    )


def _write_config(tmp_path: Path, kafka: dict, baseline: str) -> Path:
    config = demo_config(
        name="swap",
        size=f"{SIZE_S}s",
        period=f"{PERIOD_S}s",
        allowed_lateness="0s",
        kafka=kafka,
        baseline=baseline,
        features=[{"name": "latency_ms", "kind": "numeric", "edges": LATENCY_EDGES}],
    )
    config["baseline_refresh"] = f"{REFRESH_S:g}s"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.services
def test_topic_baseline_reads_the_newest_and_names_its_errors(kafka_bootstrap: str) -> None:
    run_id = uuid.uuid4().hex[:8]
    spec = KafkaSpec(**_kafka(kafka_bootstrap, run_id))
    location = f"kafka://baselines-{run_id}"
    with pytest.raises(BaselineError, match="does not exist"):
        read_baseline(location, spec)
    create_topics(kafka_bootstrap, {f"baselines-{run_id}": 1})
    with pytest.raises(BaselineError, match="holds no baseline yet"):
        read_baseline(location, spec)
    publish_baseline(BASELINE_A, location, spec)
    assert read_baseline(location, spec).id == BASELINE_A.id
    publish_baseline(BASELINE_B, location, spec)
    assert read_baseline(location, spec).id == BASELINE_B.id
    with pytest.raises(BaselineError, match="needs the config's `kafka` section"):
        read_baseline(location, None)

    # A watcher hands out each new record once, at most every refresh interval.
    watcher = BaselineTopic(spec, f"baselines-{run_id}", refresh_s=0.2)
    assert watcher.poll() is not None and watcher.poll() is None  # B, then nothing new yet
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(f"baselines-{run_id}", key=b"baseline", value=b"{not json").get(timeout=10)
    producer.close()
    time.sleep(0.3)
    with pytest.raises(BaselineError, match=f"kafka://baselines-{run_id} offset 2"):
        watcher.poll()
    time.sleep(0.3)
    assert watcher.poll() is None  # the bad record is reported once
    watcher.close()


def test_url_baselines_go_through_beam_filesystems(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(BASELINE_A.model_dump_json())
    assert read_baseline(str(path), None).id == BASELINE_A.id
    # No GCS client is installed here: the error names the location and the extra to install.
    with pytest.raises(BaselineError, match=r"gs://bucket/b.json.*apache-beam\[gcp\]"):
        read_baseline("gs://bucket/b.json", None)
    with pytest.raises(BaselineError, match="is not kafka://TOPIC"):
        read_baseline("kafka://a/b", None)


def _histogram(values: list[float]) -> np.ndarray:
    """Counts per latency bin, computed here independently of kldrift's binning."""
    codes = np.searchsorted(np.asarray(LATENCY_EDGES, dtype=float), values, side="right")
    return np.bincount(codes, minlength=len(LATENCY_EDGES) + 1)


def _kl_bits(window: np.ndarray, baseline: Baseline) -> float:
    q = np.asarray(baseline.features[0].counts, dtype=float) + SMOOTHING
    return float(entropy(window / window.sum(), q / q.sum(), base=2))


@pytest.mark.services
def test_a_baseline_published_to_the_topic_is_used_by_the_running_job(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = _kafka(kafka_bootstrap, run_id)
    location = f"kafka://swap-baselines-{run_id}"
    config = _write_config(tmp_path, kafka, location)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 1})
    (tmp_path / "a.json").write_text(BASELINE_A.model_dump_json())
    (tmp_path / "b.json").write_text(BASELINE_B.model_dump_json())
    (tmp_path / "other.json").write_text(OTHER_BINS.model_dump_json())

    published = run_cli(
        "publish-baseline", "--config", str(config), "--baseline", str(tmp_path / "a.json")
    )
    assert published.returncode == 0, published.stderr
    assert f"published baseline {BASELINE_A.id[:12]} to {location}" in published.stdout
    # The CLI refuses a baseline whose bins the job could not use, naming the feature.
    refused = run_cli(
        "publish-baseline", "--config", str(config), "--baseline", str(tmp_path / "other.json")
    )
    assert refused.returncode == 2 and "latency_ms" in refused.stderr

    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    with (
        streaming_job("--config", str(config), "--", "--job_server_timeout=20") as job,
        LiveEvents(kafka_bootstrap, kafka["input_topic"]) as events,
    ):
        wait_for(lambda: len({r.window_start for r in tail.poll()}) >= 3, 90, "3 windows on A")
        # Published by other means: a record that is not a baseline, and one with other bins.
        spec = KafkaSpec(**kafka)
        bad = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        bad.send(location.removeprefix("kafka://"), key=b"baseline", value=b"oops").get(10)
        bad.close()
        time.sleep(2 * REFRESH_S + 1)  # each is the newest record for a while: both are seen
        publish_baseline(OTHER_BINS, location, spec)
        time.sleep(3 * REFRESH_S + 2)
        swap_ms = time.time() * 1000
        published = run_cli(
            "publish-baseline", "--config", str(config), "--baseline", str(tmp_path / "b.json")
        )
        assert published.returncode == 0, published.stderr
        published_ms = time.time() * 1000  # the CLI takes seconds to start under load

        def windows_on_b() -> int:
            return len({r.window_start for r in tail.poll() if r.baseline_id == BASELINE_B.id})

        wait_for(lambda: windows_on_b() >= 3, 60, "3 windows scored with the new baseline")
    tail.close()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-3000:]
    assert "watching " + location in job.output
    assert f"baseline swapped: {BASELINE_A.id[:12]} -> {BASELINE_B.id[:12]}" in job.output
    assert "rejected, keeping" in job.output and "config edges differ" in job.output

    ids = [r.baseline_id for r in tail.reports]
    assert set(ids) == {BASELINE_A.id, BASELINE_B.id}  # never the rejected one
    # B is on the topic by published_ms; the job reads it within REFRESH_S, and a report scored
    # just before that may still be on its way to the output topic for a few seconds.
    settle_ms = published_ms + (REFRESH_S + 3) * 1000
    for report, arrived in zip(tail.reports, tail.arrived_ms, strict=True):
        if arrived < swap_ms:
            assert report.baseline_id == BASELINE_A.id
        elif arrived > settle_ms:
            assert report.baseline_id == BASELINE_B.id, "still on the old baseline"
    if job.totals.get("reports"):  # a cancelled Prism job may not report metrics
        assert job.totals["baselines_swapped"] >= 1
        assert job.totals["baselines_rejected"] >= 2

    # Each report's KL is its window's histogram against the baseline it names (scipy).
    by_id = {BASELINE_A.id: BASELINE_A, BASELINE_B.id: BASELINE_B}
    for report in tail.reports:
        start = report.window_start.timestamp()
        window = _histogram(
            [
                e["latency_ms"]
                for e in events.sent
                if e["model"] == report.key and start <= e["ts"] < start + SIZE_S
            ]
        )
        assert report.count == window.sum()
        used, other = by_id[report.baseline_id], by_id[({*by_id} - {report.baseline_id}).pop()]
        assert report.kl_bits == pytest.approx(_kl_bits(window, used), abs=1e-9)
        assert abs(report.kl_bits - _kl_bits(window, other)) > 0.1
