"""`kldrift watch`: print reports as they arrive and run a command when the retraining policy fires.

Delivery: at-least-once. A report's offset is committed only once no drift episode is pending or
its trigger's command succeeded; a failing command is retried with backoff and its offset stays
uncommitted, so a crash re-delivers the reports rather than losing the trigger.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from kldrift.consumer import ReportConsumer, ReportMessage, RetrainTrigger, Trigger
from kldrift.schemas.report import DriftReport

MAX_BACKOFF_S = 60.0


def report_line(report: DriftReport) -> str:
    kl = "-" if report.kl_bits_debiased is None else f"{report.kl_bits_debiased:.4f} bits"
    p_value = "-" if report.p_value is None else f"{report.p_value:.2g}"
    end = report.window_end.isoformat().replace("+00:00", "Z")
    marker = "  DRIFT" if report.drift else ""
    return (
        f"{end} {report.key or '-'} {report.feature} rev {report.revision}: n={report.count} "
        f"debiased KL {kl}, p {p_value}{marker}"
    )


def command_handler(command: str) -> Callable[[Trigger], None]:
    """Runs `command` in a shell with the trigger's JSON on stdin and KLDRIFT_* variables."""

    def run(trigger: Trigger) -> None:
        env = dict(
            os.environ,
            KLDRIFT_PIPELINE=trigger.pipeline,
            KLDRIFT_KEY=trigger.key or "",
            KLDRIFT_FEATURE=trigger.feature or "",
            KLDRIFT_FEATURES=",".join(trigger.features),
            KLDRIFT_WINDOW_END=trigger.window_end,
        )
        result = subprocess.run(
            command,
            shell=True,
            input=trigger.to_json(),
            text=True,
            env=env,
            capture_output=True,
            timeout=600,
        )
        if result.stdout:
            print(result.stdout.rstrip(), flush=True)
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or [""])[-1][:200]
            raise RuntimeError(f"exit code {result.returncode}: {detail}")

    return run


def _handle(
    trigger: Trigger, handler: Callable[[Trigger], None], backoff_s: float, stop: threading.Event
) -> bool:
    """Run the handler until it succeeds (True) or a stop is requested (False)."""
    delay = backoff_s
    attempt = 1
    while True:
        try:
            handler(trigger)
            print(
                f"watch: retraining triggered for {trigger.key} {trigger.feature or '(all)'} "
                f"(attempt {attempt})",
                flush=True,
            )
            return True
        except Exception as err:
            print(
                f"watch: on-drift command failed (attempt {attempt}): {err}; retrying in "
                f"{delay:g} s",
                file=sys.stderr,
                flush=True,
            )
        if stop.wait(delay):
            return False
        delay = min(delay * 2, MAX_BACKOFF_S)
        attempt += 1


def watch(
    consumer: ReportConsumer,
    policy: RetrainTrigger,
    handler: Callable[[Trigger], None] | None,
    *,
    backoff_s: float = 1.0,
    stop: threading.Event | None = None,
) -> None:
    stop = stop or threading.Event()
    while not stop.is_set():
        for message in consumer.poll(timeout_s=0.5):
            if not _process(message, consumer, policy, handler, backoff_s, stop):
                return


def _process(
    message: ReportMessage,
    consumer: ReportConsumer,
    policy: RetrainTrigger,
    handler: Callable[[Trigger], None] | None,
    backoff_s: float,
    stop: threading.Event,
) -> bool:
    print(report_line(message.report), flush=True)
    trigger = policy.offer(message.report)
    if trigger is not None:
        print(f"watch: TRIGGER {trigger.to_json()}", flush=True)
        if handler is not None and not _handle(trigger, handler, backoff_s, stop):
            return False  # stopping: leave the offset uncommitted, the report comes again
    if not policy.pending():
        consumer.commit(message)
    return True


def run_watch(
    bootstrap: str,
    topic: str,
    group_id: str,
    policy: RetrainTrigger,
    on_drift: str | None,
    *,
    from_beginning: bool,
    backoff_s: float,
    settings: dict | None = None,
) -> int:
    import signal

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    consumer = ReportConsumer(
        bootstrap, topic, group_id, from_beginning=from_beginning, settings=settings
    )
    print(
        f"watch: reading {topic} at {bootstrap} as group {group_id}; retrain when "
        f"{policy.k} of the last {policy.m} windows drift per {policy.scope}",
        flush=True,
    )
    started = time.monotonic()
    try:
        watch(
            consumer,
            policy,
            command_handler(on_drift) if on_drift else None,
            backoff_s=backoff_s,
            stop=stop,
        )
    finally:
        consumer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"watch: stopped after {time.monotonic() - started:.0f} s", flush=True)
    return 0
