"""`kldrift watch`: print reports as they arrive; when the retraining policy fires, run a command
and/or post a webhook alert.

Delivery: at-least-once. A report's offset is committed only once no drift episode is pending or
its trigger's actions succeeded; a failing action is retried with backoff and its offset stays
uncommitted, so a crash re-delivers the reports rather than losing the trigger.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kldrift.consumer import ReportConsumer, ReportMessage, RetrainTrigger, Trigger
from kldrift.schemas.report import DriftReport, WindowSummary

MAX_BACKOFF_S = 60.0
WEBHOOK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Action:
    """What the watcher does with a trigger: `run` raises when it failed (it is retried)."""

    name: str
    """Names the action in the log (never a secret)."""
    done: str
    """Logged after it succeeded, before the trigger's scope."""
    run: Callable[[Trigger], None]


def report_line(report: DriftReport) -> str:
    kl = "-" if report.kl_bits_debiased is None else f"{report.kl_bits_debiased:.4f} bits"
    p_value = "-" if report.p_value is None else f"{report.p_value:.2g}"
    end = report.window_end.isoformat().replace("+00:00", "Z")
    marker = "  DRIFT" if report.drift else ""
    return (
        f"{end} {report.key or '-'} {report.feature} rev {report.revision}: n={report.count} "
        f"debiased KL {kl}, p {p_value}{marker}"
    )


def summary_line(summary: WindowSummary) -> str:
    end = summary.window_end.isoformat().replace("+00:00", "Z")
    p_value = "-" if summary.combined_p_value is None else f"{summary.combined_p_value:.2g}"
    drifted = ", ".join(summary.features_drifted) or "none"
    marker = "  DRIFT" if summary.drift else ""
    return (
        f"{end} {summary.key or '-'} window rev {summary.revision}: n={summary.events} "
        f"{len(summary.features_drifted)} of {summary.features} features drifted ({drifted}), "
        f"combined p {p_value}{marker}"
    )


def command_action(command: str) -> Action:
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

    return Action("on-drift command", "retraining triggered for", run)


def redact_url(url: str) -> str:
    """`scheme://host[:port]/…`: what of a webhook URL may be logged. User info, path and query
    are left out: they are where webhook secrets live (Slack puts its token in the path)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query or parts.fragment else "/"
    return f"{parts.scheme}://{host}{port}{rest}"


def check_webhook_url(url: str) -> None:
    """ValueError (without the URL's secrets) unless `url` is an http(s) URL with a host."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise ValueError("--notify: not a valid URL (port or brackets)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--notify {redact_url(url)}: an http:// or https:// URL with a host")


def alert_text(trigger: Trigger) -> str:
    """The alert in one line for chat (Slack's `text`)."""
    scope = trigger.key or "-"
    scope += f" {trigger.feature}" if trigger.feature else f" ({', '.join(trigger.features)})"
    return (
        f"kldrift: retrain {trigger.pipeline} {scope}: {trigger.drifted_windows} of the last "
        f"{trigger.considered_windows} windows drifted (up to {trigger.kl_bits_debiased:.3f} bits "
        f"debiased KL), window ending {trigger.window_end}"
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx answer is raised as an HTTPError: a failure, retried


def webhook_action(url: str, timeout_s: float = WEBHOOK_TIMEOUT_S) -> Action:
    """POSTs the trigger's JSON plus a Slack-compatible `text` to `url`; a 2xx answer is success.
    User info in the URL becomes HTTP basic auth; nothing of the URL but its scheme, host and
    port is ever logged or put in an error."""
    check_webhook_url(url)
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/json", "User-Agent": "kldrift-watch"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        netloc = parts.hostname or ""
        netloc = f"[{netloc}]" if ":" in netloc else netloc
        netloc += f":{parts.port}" if parts.port else ""
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    shown = redact_url(url)
    # A webhook does not redirect; following one would send the credentials elsewhere.
    opener = urllib.request.build_opener(_NoRedirect)

    def run(trigger: Trigger) -> None:
        body = json.dumps({"text": alert_text(trigger), **json.loads(trigger.to_json())})
        request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
        try:
            with opener.open(request, timeout=timeout_s) as response:
                status = response.status
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"HTTP {err.code} from {shown}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            # Only the exception's type and errno: its text may repeat the URL.
            reason = getattr(err, "reason", err)
            code = getattr(reason, "errno", None)
            what = type(reason).__name__ + (f" (errno {code})" if code else "")
            raise RuntimeError(f"cannot reach {shown}: {what}") from None
        if not 200 <= status < 300:
            raise RuntimeError(f"HTTP {status} from {shown}")

    return Action(f"notify {shown}", f"alert posted to {shown} for", run)


def _handle(
    trigger: Trigger, actions: Sequence[Action], backoff_s: float, stop: threading.Event
) -> bool:
    """Run each action in turn until it succeeds (True), or until a stop is requested (False).
    An action that succeeded is not run again while a later one is retried."""
    return all(_retry(trigger, action, backoff_s, stop) for action in actions)


def _retry(trigger: Trigger, action: Action, backoff_s: float, stop: threading.Event) -> bool:
    delay = backoff_s
    attempt = 1
    while True:
        try:
            action.run(trigger)
            print(
                f"watch: {action.done} {trigger.key} {trigger.feature or '(all)'} "
                f"(attempt {attempt})",
                flush=True,
            )
            return True
        except Exception as err:
            print(
                f"watch: {action.name} failed (attempt {attempt}): {err}; retrying in {delay:g} s",
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
    actions: Sequence[Action],
    *,
    backoff_s: float = 1.0,
    stop: threading.Event | None = None,
) -> None:
    stop = stop or threading.Event()
    while not stop.is_set():
        for message in consumer.poll(timeout_s=0.5):
            if not _process(message, consumer, policy, actions, backoff_s, stop):
                return


def _process(
    message: ReportMessage,
    consumer: ReportConsumer,
    policy: RetrainTrigger,
    actions: Sequence[Action],
    backoff_s: float,
    stop: threading.Event,
) -> bool:
    record = message.report
    if isinstance(record, DriftReport):
        print(report_line(record), flush=True)
    elif policy.scope == "window":  # the summaries are the lines that matter there
        print(summary_line(record), flush=True)
    trigger = policy.offer(record)
    if trigger is not None:
        print(f"watch: TRIGGER {trigger.to_json()}", flush=True)
        if not _handle(trigger, actions, backoff_s, stop):
            return False  # stopping: leave the offset uncommitted, the report comes again
    if not policy.pending():
        consumer.commit(message)
    return True


def run_watch(
    bootstrap: str,
    topic: str,
    group_id: str,
    policy: RetrainTrigger,
    actions: Sequence[Action],
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
        f"{policy.k} of the last {policy.m} windows drift per {policy.scope}"
        + "".join(f"; {action.name}" for action in actions),
        flush=True,
    )
    started = time.monotonic()
    try:
        watch(consumer, policy, actions, backoff_s=backoff_s, stop=stop)
    finally:
        consumer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"watch: stopped after {time.monotonic() - started:.0f} s", flush=True)
    return 0
