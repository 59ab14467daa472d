"""kldrift inside your own Beam pipeline: JSON lines in, drift reports (KL in bits) out.

    python examples/beam_pipeline.py config.yaml 'events*.jsonl' out [Beam flags...]

writes out/reports-*.jsonl (one DriftReport per line) and out/dead-letters-*.txt.
"""

import sys

import apache_beam as beam

from kldrift import DriftReport, SlidingKLDivergence, load_config, read_baseline


def run(config_path: str, events: str, output: str, *beam_args: str) -> None:
    config = load_config(config_path)
    baseline = read_baseline(config.baseline)  # a file kldrift baseline wrote
    with beam.Pipeline(argv=list(beam_args)) as pipeline:
        lines = pipeline | beam.io.ReadFromText(events)
        drift = lines | SlidingKLDivergence(config, baseline)  # event time from the config's field
        reports = drift["reports"] | beam.Map(DriftReport.model_dump_json)
        _ = reports | beam.io.WriteToText(f"{output}/reports", ".jsonl")
        dead = drift["dead_letters"] | beam.Map(repr)
        _ = dead | "Dead" >> beam.io.WriteToText(f"{output}/dead-letters", ".txt")


if __name__ == "__main__":
    run(*sys.argv[1:])
