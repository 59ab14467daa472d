"""`kldrift watch --notify URL` on a real broker against a local HTTP server that fails twice, then
accepts: the alert is retried with backoff, carries the trigger and a Slack-compatible `text`,
its offsets are committed only after the accepted POST, and the URL's secrets never reach the log."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from _jobs import KLDRIFT, committed, report_topic_config, send_reports, wait_for, watcher
from _reports import make_report

from kldrift.consumer import Trigger
from kldrift.synthetic import demo_config
from kldrift.watch import redact_url, webhook_action

SECRETS = ("alerter", "s3cr3t-pass", "T0KEN-IN-PATH", "query-secret-123")


class _FlakyReceiver(BaseHTTPRequestHandler):
    """Answers 500, then 503, then 200; keeps every request."""

    received: list[dict] = []
    statuses = [500, 503]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses[len(self.received)] if len(self.received) < 2 else 200
        type(self).received.append(
            {
                "at": time.monotonic(),
                "path": self.path,
                "headers": dict(self.headers),
                "body": body,
                "status": status,
            }
        )
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"try later")

    def log_message(self, *_: object) -> None:
        pass


def test_redacted_urls_keep_only_scheme_host_and_port() -> None:
    url = "https://alerter:s3cr3t-pass@hooks.example.com:8443/services/T0KEN-IN-PATH?token=x#f"
    assert redact_url(url) == "https://hooks.example.com:8443/…"
    assert redact_url("http://[::1]:9000/") == "http://[::1]:9000/"
    assert redact_url("http://example.com") == "http://example.com/"


def test_a_bad_notify_url_is_a_one_line_error_without_its_secrets(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    kafka = {
        "bootstrap_servers": "127.0.0.1:1",
        "input_topic": "i",
        "output_topic": "o",
        "dead_letter_topic": "d",
    }
    config.write_text(yaml.safe_dump(demo_config(name="n", kafka=kafka)))
    done = subprocess.run(
        [KLDRIFT, "watch", "--config", str(config), "--notify", "ftp://alerter:s3cr3t-pass@h/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--notify ftp://h/…: an http:// or https:// URL with a host" in done.stderr
    assert "s3cr3t-pass" not in done.stderr + done.stdout


def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    """Following it would send the basic-auth credentials to the redirect's host."""
    paths: list[str] = []

    class Redirector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            paths.append(self.path)
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/elsewhere")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    trigger = Trigger("p", "k", "f", "2024-01-01T00:05:00Z", 3, 5, ["f"], 0.25)
    try:
        with pytest.raises(RuntimeError, match=rf"^HTTP 302 from http://127.0.0.1:{port}/…$"):
            webhook_action(f"http://alerter:s3cr3t-pass@127.0.0.1:{port}/hook").run(trigger)
    finally:
        server.shutdown()
        server.server_close()
    assert paths == ["/hook"]


@pytest.mark.services
def test_notify_retries_until_the_webhook_accepts_then_commits(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic, config = report_topic_config(tmp_path, kafka_bootstrap, "notify-test")
    flags = [False, True, False, True, True]  # the 5th window completes 3 drifted of the last 5
    reports = [
        make_report(minute, flag, pipeline="notify-test", key="model-a", window_minutes=2)
        for minute, flag in enumerate(flags, start=1)
    ]
    send_reports(kafka_bootstrap, topic, reports)

    _FlakyReceiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyReceiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = (
        f"http://alerter:s3cr3t-pass@127.0.0.1:{port}/services/T0KEN-IN-PATH?token=query-secret-123"
    )
    try:
        with watcher(config, "--notify", url, "--retry-backoff", "0.3") as watch:
            wait_for(lambda: len(_FlakyReceiver.received) >= 3, 60, "three posts")
            time.sleep(1.5)  # time for a (wrong) fourth post, and for the commit
    finally:
        server.shutdown()
        server.server_close()
    output = watch.output
    assert watch.returncode == 0, output
    posts = _FlakyReceiver.received
    assert [p["status"] for p in posts] == [500, 503, 200], output

    # The same alert each time, where the URL says, with its user info as basic auth.
    assert len({p["body"] for p in posts}) == 1
    assert {p["path"] for p in posts} == {"/services/T0KEN-IN-PATH?token=query-secret-123"}
    auth = base64.b64encode(b"alerter:s3cr3t-pass").decode()
    assert {p["headers"]["Authorization"] for p in posts} == {f"Basic {auth}"}
    assert {p["headers"]["Content-Type"] for p in posts} == {"application/json"}
    alert = json.loads(posts[0]["body"])
    assert alert["text"] == (
        "kldrift: retrain notify-test model-a latency_ms: 3 of the last 5 windows drifted "
        "(up to 0.250 bits debiased KL), window ending 2024-01-01T00:05:00Z"
    )
    assert alert["pipeline"] == "notify-test" and alert["key"] == "model-a"
    assert alert["feature"] == "latency_ms" and alert["features"] == ["latency_ms"]
    assert (alert["drifted_windows"], alert["considered_windows"]) == (3, 5)
    assert alert["kl_bits_debiased"] == 0.25

    # Backoff: 0.3 s before the second attempt, then twice that.
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(posts)]
    assert gaps[0] >= 0.3 * 0.9 and gaps[1] >= 0.6 * 0.9, gaps

    shown = f"http://127.0.0.1:{port}/…"
    assert f"notify {shown} failed (attempt 1): HTTP 500 from {shown}" in output
    assert f"notify {shown} failed (attempt 2): HTTP 503 from {shown}" in output
    assert f"alert posted to {shown} for model-a latency_ms (attempt 3)" in output
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} was logged"

    # Committed after the accepted post: a restarted watcher starts after the trigger.
    assert committed(kafka_bootstrap, watch.group, topic) == len(flags)
