"""A Dataflow-style streaming job: Pub/Sub in, kldrift in the middle, Kafka out.

    python examples/dataflow_pipeline.py --config config.yaml \
        --subscription projects/my-project/subscriptions/events \
        --bootstrap broker:9092 --topic kldrift.drift \
        --runner DataflowRunner --project my-project --region europe-west1 ...

Pub/Sub stamps each message with its `event_time` attribute (RFC 3339 or epoch ms), so the
runner's watermark follows event time and kldrift takes each element's Beam timestamp as its event
time. The same middle works behind Beam's own `ReadFromKafka(..., with_metadata=False)` or any
source that timestamps by event time; reports go to Kafka keyed per window, as `kldrift run` writes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import apache_beam as beam

from kldrift import (
    SlidingKLDivergence,
    WriteDeadLettersToKafka,
    WriteReportsToKafka,
    load_config,
    read_baseline,
)


def build(pipeline: beam.Pipeline, args: argparse.Namespace) -> None:
    config = load_config(args.config)
    baseline = read_baseline(config.baseline)
    events = pipeline | "ReadEvents" >> beam.io.ReadFromPubSub(
        subscription=args.subscription, timestamp_attribute="event_time"
    )
    drift = events | "SlidingKLDivergence" >> SlidingKLDivergence(
        config, baseline, event_time="timestamp"
    )
    _ = drift["reports"] | "WriteReports" >> WriteReportsToKafka(args.bootstrap, args.topic)
    _ = drift["dead_letters"] | "WriteDeadLetters" >> WriteDeadLettersToKafka(
        args.bootstrap, args.topic + ".dead-letter"
    )


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--bootstrap", required=True, help="Kafka host:port[,host:port...]")
    parser.add_argument("--topic", required=True, help="the report topic")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args, beam_args = parse_args(argv)
    options = beam.options.pipeline_options.PipelineOptions([*beam_args, "--streaming"])
    with beam.Pipeline(options=options) as pipeline:
        build(pipeline, args)


if __name__ == "__main__":
    main()
