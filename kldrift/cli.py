"""The `kldrift` command: sub-commands for local services, baseline, replay, streaming run and demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kldrift import commands
from kldrift.exceptions import KldriftError
from kldrift.io import FILE_FORMATS, kafka_log


def _add_local(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="local development services")
    local_sub = local.add_subparsers(dest="service", required=True)
    kafka = local_sub.add_parser(
        "kafka", help="a real single-node Kafka broker (KRaft) on 127.0.0.1"
    )
    kafka.add_argument("action", choices=["start", "stop", "restart", "status"])
    kafka.add_argument("--port", type=int, help="client port (default: a free one, kept after)")
    kafka.add_argument("--data-dir", help="where the cluster lives (default: under KLDRIFT_HOME)")
    kafka.add_argument(
        "--security",
        choices=["plaintext", "sasl_plaintext", "ssl"],
        help="the client listener: none (default), SASL/PLAIN, or TLS with a generated CA",
    )

    def run(args: argparse.Namespace) -> int:
        from kldrift.local import kafka as local_kafka

        options = local_kafka.CliOptions(args.port, args.data_dir, args.security)
        return local_kafka.cli(args.action, options)

    kafka.set_defaults(func=run)
    _add_local_flink(local_sub)


def _add_local_flink(local_sub: argparse._SubParsersAction) -> None:
    flink = local_sub.add_parser(
        "flink",
        help="a standalone Flink session cluster (JobManager, TaskManagers, Python worker pool) "
        "on 127.0.0.1",
    )
    flink.add_argument("action", choices=["start", "stop", "status"])
    flink.add_argument(
        "--taskmanagers", type=int, default=1, help="TaskManager processes to start (default 1)"
    )
    flink.add_argument(
        "--data-dir",
        help="where the cluster lives (default: under KLDRIFT_HOME; `kldrift run` finds only "
        "that one by itself, else pass the flags `start` prints)",
    )

    def run(args: argparse.Namespace) -> int:
        from kldrift.local import flink_cluster

        return flink_cluster.cli(args.action, args.taskmanagers, args.data_dir)

    flink.set_defaults(func=run)

    registry = local_sub.add_parser(
        "registry",
        help="a real Schema Registry (Apicurio, in-memory, Confluent-compatible API) on 127.0.0.1",
    )
    registry.add_argument("action", choices=["start", "stop", "status"])
    registry.add_argument("--port", type=int, help="HTTP port (default: a free one)")

    def run_registry(args: argparse.Namespace) -> int:
        from kldrift.local import registry as local_registry

        return local_registry.cli(args.action, args.port)

    registry.set_defaults(func=run_registry)


def _add_config(sub: argparse._SubParsersAction) -> None:
    config = sub.add_parser("config", help="the config file: JSON Schema, validation")
    config_sub = config.add_subparsers(dest="action", required=True)
    schema = config_sub.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(func=lambda args: commands.config_schema())
    check = config_sub.add_parser("check", help="validate a config (and its baseline)")
    check.add_argument("--config", required=True)
    check.set_defaults(func=lambda args: commands.config_check(args.config))


def _add_baseline(sub: argparse._SubParsersAction) -> None:
    baseline = sub.add_parser("baseline", help="build a baseline from training data (batch job)")
    baseline.add_argument("--config", required=True, help="pipeline config (YAML or JSON)")
    baseline.add_argument(
        "--input", required=True, help="JSON lines, CSV, Parquet or Avro: a path or glob"
    )
    _add_format(baseline)
    baseline.add_argument("--output", required=True, help="where to write baseline.json")
    baseline.add_argument("--start", help="only events at or after this time (RFC 3339/epoch s)")
    baseline.add_argument("--end", help="only events before this time (RFC 3339/epoch s)")
    baseline.add_argument("beam_args", nargs=argparse.REMAINDER, help="-- Beam pipeline options")
    baseline.set_defaults(func=commands.baseline)


def _add_format(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--format",
        choices=FILE_FORMATS,
        help="the input files' format (default: by extension: .csv, .parquet, .avro; else jsonl)",
    )


def _add_publish_baseline(sub: argparse._SubParsersAction) -> None:
    publish = sub.add_parser(
        "publish-baseline", help="send a baseline file to a kafka:// topic a running job watches"
    )
    publish.add_argument("--config", required=True, help="the job's config (checks the bins)")
    publish.add_argument("--baseline", required=True, help="the baseline file to publish")
    publish.add_argument("--to", help="kafka://TOPIC (default: the config's baseline)")
    publish.add_argument("--bootstrap", help="override kafka.bootstrap_servers")
    publish.set_defaults(func=commands.publish_baseline)


def _add_replay(sub: argparse._SubParsersAction) -> None:
    replay = sub.add_parser("replay", help="score a bounded file of events (backfill, reference)")
    replay.add_argument("--config", required=True)
    replay.add_argument("--baseline", help="baseline file (default: the config's baseline)")
    replay.add_argument(
        "--input", required=True, help="JSON lines, CSV, Parquet or Avro: a path or glob"
    )
    _add_format(replay)
    replay.add_argument("--output", required=True, help="reports, one JSON per line, sorted")
    replay.add_argument("--dead-letter", help="where to write records that were not binned")
    replay.add_argument(
        "--summaries", help="where to write the window summaries, one JSON per line, sorted"
    )
    replay.add_argument(
        "--strict",
        action="store_true",
        help="exit 2 when no record was read, every record was dead-lettered, or a feature had "
        "no value in any event binned (a renamed field); without it these are printed, exit 0",
    )
    replay.add_argument("beam_args", nargs=argparse.REMAINDER, help="-- Beam pipeline options")
    replay.set_defaults(func=commands.replay)


def _add_run(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run the streaming job: Kafka in, drift reports out")
    run.add_argument("--config", required=True)
    run.add_argument("--baseline", help="baseline file (default: the config's baseline)")
    run.add_argument("--bootstrap", help="override kafka.bootstrap_servers")
    run.add_argument(
        "--reset-resume",
        action="store_true",
        help="after a window change (size, period, allowed lateness): resume from the group's "
        "committed offsets anyway, reporting only the new windows complete from there",
    )
    run.add_argument(
        "--worker-processes",
        action="store_true",
        help="Prism only: run each of the kafka.readers readers (with its decoding and binning) "
        "and the rest of the job in SDK worker processes of their own, one core each",
    )
    run.add_argument("beam_args", nargs=argparse.REMAINDER, help="-- Beam pipeline options")
    run.set_defaults(func=commands.run)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the whole loop locally in about a minute (README's run)")
    demo.add_argument("--out", default="kldrift-demo", help="output folder (replaced)")
    demo.add_argument("--duration", type=float, default=40.0, help="seconds of live events")
    demo.add_argument("--speed", type=float, default=60.0, help="event-time seconds per second")
    demo.add_argument("--rate", type=float, default=400.0, help="events per second")
    demo.add_argument("--drift-at", type=float, default=0.5, help="fraction of the run (0-1)")
    demo.add_argument("--drift-size", type=float, default=1.0, help="0 = no drift")
    demo.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    demo.add_argument(
        "--format",
        choices=["json", "avro"],
        default="json",
        help="events as JSON, or as Avro through a local Schema Registry",
    )
    demo.add_argument("--no-live", action="store_true", help="no live table (for logs)")
    demo.add_argument("--no-plots", action="store_true")
    demo.set_defaults(func=commands.demo)


def _add_report(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="plots and an HTML page from drift reports")
    report.add_argument("--input", help="reports, one JSON per line (kldrift replay's output)")
    report.add_argument("--topic", help="read the reports from this Kafka topic instead")
    report.add_argument("--bootstrap", default="127.0.0.1:9092", help="with --topic")
    report.add_argument("--output", required=True, help="folder for the PNGs and index.html")
    report.set_defaults(func=commands.report)


def _add_report_schema(sub: argparse._SubParsersAction) -> None:
    schema = sub.add_parser("report-schema", help="print the drift report's JSON Schema")
    schema.set_defaults(func=lambda args: commands.report_schema())


def _add_power(sub: argparse._SubParsersAction) -> None:
    power = sub.add_parser(
        "power",
        help="simulated flag rates per feature for your baseline (operating characteristic)",
    )
    power.add_argument("--config", required=True, help="pipeline config (drift rule, window size)")
    power.add_argument("--baseline", help="baseline file (default: the config's baseline)")
    events = power.add_mutually_exclusive_group(required=True)
    events.add_argument("--window-events", type=int, help="expected events per window (N)")
    events.add_argument(
        "--events-per-second", type=float, help="expected events/s per key: N = rate x window.size"
    )
    power.add_argument("--windows", type=int, default=2000, help="simulated windows per cell")
    power.add_argument("--seed", type=int, default=0)
    power.set_defaults(func=commands.power)


def _add_watch(sub: argparse._SubParsersAction) -> None:
    watch = sub.add_parser("watch", help="print reports; run a command when retraining is due")
    watch.add_argument("--config", required=True, help="the job's config (its kafka section)")
    watch.add_argument("--on-drift", help="shell command run with the trigger JSON on stdin")
    watch.add_argument(
        "--notify",
        action="append",
        metavar="URL",
        help="POST the trigger as JSON with a Slack-compatible `text` (repeatable)",
    )
    watch.add_argument("--k", type=int, default=3, help="drifted windows needed...")
    watch.add_argument("--m", type=int, default=5, help="...among the last m windows")
    watch.add_argument("--cooldown", default="30m", help="quiet time after a trigger (event time)")
    watch.add_argument(
        "--scope",
        choices=["feature", "key", "window"],
        default="feature",
        help="count drifted windows per (key, feature), per key (any feature), or per key from "
        "the window summaries (one verdict per window)",
    )
    watch.add_argument("--features", help="only these features (comma-separated)")
    watch.add_argument(
        "--fdr",
        type=float,
        help="count a flagged window only if its q_value is below this (false discovery rate)",
    )
    watch.add_argument("--group", help="consumer group (default: kldrift.NAME.watch)")
    watch.add_argument("--from-beginning", action="store_true", help="with no committed offset")
    watch.add_argument("--retry-backoff", type=float, default=1.0, help="first retry delay, s")
    watch.set_defaults(func=commands.watch)


def _add_exporter(sub: argparse._SubParsersAction) -> None:
    exporter = sub.add_parser(
        "exporter", help="serve the job's reports, dead letters and lag as Prometheus metrics"
    )
    exporter.add_argument("--config", required=True, help="the job's config (its kafka section)")
    exporter.add_argument("--port", type=int, default=9750, help="HTTP port (0: any free one)")
    exporter.add_argument("--address", default="0.0.0.0", help="address to listen on")
    exporter.add_argument("--bootstrap", help="override kafka.bootstrap_servers")
    exporter.add_argument("--lookback", default="1h", help="read reports written this long ago")
    exporter.add_argument(
        "--max-pairs", type=int, default=1000, help="cap on (key, feature) pairs exported"
    )
    exporter.add_argument(
        "--forget-after", default="6h", help="drop a pair this long after its last report"
    )
    exporter.add_argument(
        "--offsets-interval", default="10s", help="how often to read the input group's offsets"
    )
    exporter.set_defaults(func=commands.exporter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kldrift", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_local(sub)
    _add_config(sub)
    _add_baseline(sub)
    _add_publish_baseline(sub)
    _add_replay(sub)
    _add_run(sub)
    _add_demo(sub)
    _add_report(sub)
    _add_watch(sub)
    _add_exporter(sub)
    _add_report_schema(sub)
    _add_power(sub)
    return parser


def _show_bin_warnings() -> None:
    """The Bin step's warnings (records dead-lettered, features without values, at most once a
    minute) as plain lines on stderr: a job's Python worker runs in this process (LOOPBACK), so
    what it logs reaches the terminal of `kldrift run` or `replay`."""
    from kldrift import metrics

    logger = logging.getLogger(metrics.WARNINGS_LOGGER)
    if logger.handlers:
        return
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("%(message)s"))
    plain.setLevel(logging.WARNING)
    logger.addHandler(plain)
    logger.propagate = False


def configure_logging() -> None:
    """What kldrift's commands, and the worker processes of `kldrift run --worker-processes`,
    log on stderr."""
    # Beam's GCP extras warn at import about a client library kldrift does not use.
    logging.getLogger().addFilter(lambda record: "apitools" not in record.getMessage())
    # kafka-python logs routine, self-healing events (a coordinator still loading, a slow event-loop
    # tick) as warnings; errors still show.
    for name in ("kafka.coordinator", "kafka.net.selector"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Connection retries: one line when a broker is lost, one when it is back.
    kafka_log.install()
    _show_bin_warnings()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KldriftError as err:  # a UserError, or one a command raised outside user_errors()
        print(f"kldrift: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `kldrift config schema | head`: the reader had enough
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141
    except Exception as err:  # kafka-python's own error (unreachable, refused): one line
        line = kafka_log.kafka_error_line(err)
        if line is None:
            raise
        print(f"kldrift: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kldrift: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
