"""What each `kldrift` sub-command does; the CLI parses arguments and calls these."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from kldrift import metrics
from kldrift.errors import UserError, user_errors
from kldrift.events import parse_rfc3339_us
from kldrift.jobs import load_job
from kldrift.schemas.config import config_json_schema, load_config, with_kafka_overrides

if TYPE_CHECKING:
    from kldrift.pipeline.replay import ReplaySummary

T = TypeVar("T")


def _beam_args(args: Sequence[str]) -> list[str]:
    return [a for a in args if a != "--"]


def _job_beam_args(args: Sequence[str]) -> list[str]:
    """A job's Beam flags, with the local runner (Prism by default, or Flink) they need."""
    from kldrift.local.runners import local_runner_args

    return local_runner_args(_beam_args(args))


def parse_time_us(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return round(float(text) * 1_000_000)
    except ValueError:
        pass
    parsed = parse_rfc3339_us(text)
    if parsed is None:
        raise UserError(f"{flag} {text!r} is neither epoch seconds nor RFC 3339 time")
    return parsed


def _timed(label: str, work: Callable[[], T]) -> T:
    started = time.monotonic()
    result = work()
    print(f"kldrift: {label} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return result


def config_schema() -> int:
    print(json.dumps(config_json_schema(), indent=2))
    return 0


def report_schema() -> int:
    from kldrift.schemas.report import report_json_schema

    print(json.dumps(report_json_schema(), indent=2))
    return 0


def power(args: argparse.Namespace) -> int:
    from kldrift.power import format_power_table, operating_characteristic

    config, baseline_ = load_job(args.config, args.baseline)
    if args.window_events is not None:
        if args.window_events < 1:
            raise UserError("--window-events must be at least 1")
        window_events = args.window_events
    else:
        if not args.events_per_second > 0:
            raise UserError("--events-per-second must be positive")
        window_events = max(1, round(args.events_per_second * config.window.size))
    if args.windows < 100:
        raise UserError("--windows must be at least 100")
    started = time.monotonic()
    table = operating_characteristic(
        config, baseline_, window_events, windows=args.windows, seed=args.seed
    )
    print(format_power_table(table))
    print(f"kldrift: simulated in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def config_check(path: str) -> int:
    with user_errors():
        config = load_config(path)
    print(
        f"{path}: valid ({len(config.features)} features, window {config.window.size:g} s "
        f"every {config.window.period:g} s)"
    )
    if config.baseline and _not_built_yet(config.baseline):
        # README's tour checks the config before it builds the baseline: not an error yet.
        print(
            f"{config.baseline}: not built yet: `kldrift baseline` writes it "
            "(config check then compares its bins)"
        )
    elif config.baseline:
        load_job(path, None)
        print(f"{config.baseline}: matches the config")
    return 0


def _not_built_yet(baseline: str) -> bool:
    """A local baseline file that does not exist (a URL or a kafka:// topic is always read)."""
    return "://" not in baseline and not Path(baseline).exists()


def baseline(args: argparse.Namespace) -> int:
    from kldrift.io.files import require_writable
    from kldrift.pipeline.baseline import build_baseline

    with user_errors(batch_job=True):
        config = load_config(args.config)
        require_writable(args.output, "--output")
        start_us = parse_time_us(args.start, "--start")
        end_us = parse_time_us(args.end, "--end")
        print(f"kldrift: building baseline from {args.input}", file=sys.stderr)
        result = _timed(
            "baseline built",
            lambda: build_baseline(
                config,
                args.input,
                args.output,
                start_us=start_us,
                end_us=end_us,
                beam_args=_job_beam_args(args.beam_args),
                input_format=args.format,
            ),
        )
    for feature in result.features:
        print(
            f"{feature.name}: {len(feature.counts)} bins, {sum(feature.counts)} values, "
            f"{feature.missing} missing, {feature.invalid} invalid"
        )
    print(f"wrote {args.output} (baseline_id {result.id[:12]})")
    return 0


def _bootstrap(args: argparse.Namespace) -> dict[str, str]:
    return {"bootstrap_servers": args.bootstrap} if args.bootstrap else {}


def publish_baseline(args: argparse.Namespace) -> int:
    """Send a baseline file to a kafka:// topic, after checking it against the config."""
    from kldrift.io.baselines import publish_baseline as publish

    with user_errors():
        target = args.to or load_config(args.config).baseline or ""
    config, baseline_ = load_job(args.config, args.baseline, _bootstrap(args))
    with user_errors():
        if config.kafka is None:
            raise UserError(f"{args.config}: `kafka:` is required to publish to {target}")
        partition, offset = publish(baseline_, target, config.kafka)
    print(
        f"published baseline {baseline_.id[:12]} to {target} (partition {partition}, offset {offset})"
    )
    return 0


def replay(args: argparse.Namespace) -> int:
    from kldrift.io.files import require_writable
    from kldrift.pipeline.replay import run_replay

    config, baseline_ = load_job(args.config, args.baseline)
    with user_errors():
        for flag in ("output", "dead_letter", "summaries"):
            if getattr(args, flag) is not None:
                require_writable(getattr(args, flag), "--" + flag.replace("_", "-"))
    print(f"kldrift: replaying {args.input} against baseline {baseline_.id[:12]}", file=sys.stderr)
    started = time.monotonic()
    with user_errors(batch_job=True):
        summary = run_replay(
            config,
            baseline_,
            args.input,
            args.output,
            args.dead_letter,
            _job_beam_args(args.beam_args),
            summary_output=args.summaries,
            input_format=args.format,
        )
    elapsed = time.monotonic() - started
    rate = summary.events_binned / elapsed if elapsed > 0 else 0.0
    print(
        f"wrote {summary.reports} reports to {args.output}; {summary.events_binned} events binned, "
        f"{summary.dead_letters} dead-lettered; {elapsed:.1f} s ({rate:,.0f} events/s)"
    )
    if summary.records_read == 0:
        print(f"no records read from {args.input}")
    for line in summary.emptiness_lines():
        print(line)
    if args.strict:
        problem = _strict_problem(summary, args.input)
        if problem is not None:
            raise UserError(f"--strict: {problem}")
    return 0


def _strict_problem(summary: ReplaySummary, input_pattern: str) -> str | None:
    """What `kldrift replay --strict` refuses: nothing read, nothing binned, or a feature without
    a value in any event binned (None if none of these)."""
    if summary.records_read == 0:
        return f"no records read from {input_pattern}"
    if summary.events_binned == 0:
        reasons = metrics.reasons_text(summary.dead_letter_reasons)
        return f"all {summary.records_read} records read were dead-lettered ({reasons})"
    empty = summary.empty_features()
    if empty:
        names = ", ".join(f"'{name}'" for name in empty)
        noun = "feature" if len(empty) == 1 else "features"
        return f"{noun} {names} had no value in any of the {summary.events_binned} events binned"
    return None


def run(args: argparse.Namespace) -> int:
    from kldrift.pipeline.streaming import run_streaming

    config, baseline_ = load_job(args.config, args.baseline, _bootstrap(args))
    if config.kafka is None:
        raise UserError(f"{args.config}: `kafka:` is required to run the streaming job")
    with user_errors():
        from kldrift.local.children import stop_leftover_children
        from kldrift.local.runners import prepare_streaming

        beam_args = _job_beam_args(args.beam_args)
        prepare_streaming(beam_args)
        stopping = None
        if args.worker_processes:
            from kldrift.local.runners import worker_process_args

            beam_args, pool = worker_process_args(beam_args)
            stopping = pool.quiet
        return run_streaming(
            config,
            baseline_,
            beam_args,
            reset_resume=args.reset_resume,
            stop_runner=lambda: stop_leftover_children(quiet=True),
            worker_processes=args.worker_processes,
            stopping=stopping,
        )


def demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kldrift.demo import DemoOptions, main

    if not 0 <= args.drift_at <= 1:
        raise UserError("--drift-at is a fraction of the run, between 0 and 1")
    if args.duration <= 0 or args.speed <= 0 or args.rate <= 0:
        raise UserError("--duration, --speed and --rate must be positive")
    options = DemoOptions(
        out_dir=Path(args.out).resolve(),
        duration_s=args.duration,
        speed=args.speed,
        rate=args.rate,
        drift_at=args.drift_at,
        drift_size=args.drift_size,
        bootstrap=args.bootstrap,
        format=args.format,
        live=not args.no_live,
        plots=not args.no_plots,
    )
    with user_errors():
        return main(options)


def report(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from kldrift.report import write_report

    if bool(args.input) == bool(args.topic):
        raise UserError("give exactly one of --input FILE or --topic TOPIC")
    if args.input:
        source = Path(args.input)
        if not source.is_file():
            raise UserError(f"--input {args.input}: no such file")
        written = write_report(source, Path(args.output))
    else:
        from kldrift.consumer import read_reports

        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "reports.jsonl"
            lines = [
                m.report.to_json_bytes()
                for m in read_reports(args.bootstrap, args.topic)
                if m.report.record == "feature"  # window summaries are not plotted
            ]
            if not lines:
                raise UserError(f"no reports on topic {args.topic} at {args.bootstrap}")
            source.write_bytes(b"\n".join(lines) + b"\n")
            written = write_report(source, Path(args.output))
    for path in written:
        print(f"wrote {path}")
    return 0


def watch(args: argparse.Namespace) -> int:
    from kldrift.consumer import RetrainTrigger
    from kldrift.io.kafka_client import client_settings
    from kldrift.schemas.durations import parse_duration
    from kldrift.watch import Action, command_action, run_watch, webhook_action

    with user_errors():
        config = load_config(args.config)
    if config.kafka is None:
        raise UserError(f"{args.config}: `kafka:` is required to watch its report topic")
    try:
        policy = RetrainTrigger(
            k=args.k,
            m=args.m,
            cooldown_s=parse_duration(args.cooldown),
            scope=args.scope,
            features=set(args.features.split(",")) if args.features else None,
            fdr=args.fdr,
        )
        actions: list[Action] = [command_action(args.on_drift)] if args.on_drift else []
        actions += [webhook_action(url) for url in args.notify or []]
    except ValueError as err:
        raise UserError(str(err)) from None
    settings = client_settings(config.kafka, "consumer")
    bootstrap = ",".join(settings.pop("bootstrap_servers"))
    return run_watch(
        bootstrap,
        config.kafka.output_topic,
        args.group or f"kldrift.{config.name}.watch",
        policy,
        actions,
        from_beginning=args.from_beginning,
        backoff_s=args.retry_backoff,
        settings=settings,
    )


def exporter(args: argparse.Namespace) -> int:
    import signal
    import threading

    from kldrift.exporter import DriftMetrics, TopicFeed, run_exporter
    from kldrift.io.kafka_client import client_settings
    from kldrift.pipeline.streaming import group_id_of
    from kldrift.schemas.durations import parse_duration

    with user_errors():
        config = with_kafka_overrides(load_config(args.config), _bootstrap(args))
        if config.kafka is None:
            raise UserError(f"{args.config}: `kafka:` is required to export its topics")
        settings = client_settings(config.kafka, "consumer")
    from kafka import KafkaConsumer

    from kldrift.io.kafka_client import CONNECT_TIMEOUT_S

    if "bootstrap_timeout_ms" in KafkaConsumer.DEFAULT_CONFIG:  # kafka-python >= 3
        settings.setdefault("bootstrap_timeout_ms", CONNECT_TIMEOUT_S * 1000)
    try:
        lookback_s, forget_after_s, interval_s = (
            parse_duration(getattr(args, name))
            for name in ("lookback", "forget_after", "offsets_interval")
        )
        metrics = DriftMetrics(
            config.name,
            window_size_s=config.window.size,
            window_period_s=config.window.period,
            max_pairs=args.max_pairs,
            forget_after_s=forget_after_s,
        )
    except ValueError as err:
        raise UserError(str(err)) from None
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port")
    from kafka.errors import KafkaError

    try:
        feed = TopicFeed(
            metrics,
            settings,
            report_topic=config.kafka.output_topic,
            dead_letter_topic=config.kafka.dead_letter_topic,
            input_topic=config.kafka.input_topic,
            job_group=group_id_of(config),
            start_s=time.time() - lookback_s,
        )
    except KafkaError as err:
        raise UserError(
            f"cannot reach Kafka at {config.kafka.bootstrap_servers} ({type(err).__name__}): "
            "check kafka.bootstrap_servers and kafka.client"
        ) from None
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(
        f"exporter: reading {config.kafka.output_topic} and {config.kafka.dead_letter_topic} "
        f"from {lookback_s:g} s ago; lag of group {group_id_of(config)} on "
        f"{config.kafka.input_topic}",
        flush=True,
    )
    try:
        return run_exporter(
            feed,
            metrics,
            port=args.port,
            address=args.address,
            offsets_interval_s=interval_s,
            stop=stop,
        )
    except OSError as err:
        raise UserError(f"cannot serve metrics on {args.address}:{args.port}: {err}") from None
