"""README's run command in a short mode: the demo starts its own broker and job, flags drift after
the injected moment (and before it no more often than its stated error rate), writes plots, and
stops everything."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))


def test_demo_flags_drift_after_the_injected_moment_and_writes_plots(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [KLDRIFT, "demo", "--duration", "16", "--no-live", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    injected = next(line for line in lines if "drift injected at" in line)
    assert any(line.startswith("demo: windows scored:") for line in lines)
    assert any("dead-lettered: 4" in line for line in lines)  # the demo sends 2 x 2 malformed
    # The terminal shows the demo's own lines; Beam's and Prism's log is in demo.log.
    beam_lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith(("WARNING:", "INFO:", "ERROR:")) or "PrismRunner" in line
    ]
    assert beam_lines == [], beam_lines
    assert "Really starting service" in (out / "demo.log").read_text()

    reports = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert reports
    config = (out / "config.yaml").read_text()
    assert "demo.events." in config
    drift_at = _utc(injected.rsplit("at ", 1)[1].split(" ")[0])  # RFC 3339, event time
    calm = [r for r in reports if _utc(r["window_end"]) <= drift_at]
    after = [r for r in reports if _utc(r["window_end"]) > drift_at]
    assert calm and after

    # Windows that ended before the drift: a flag there is a false alarm, and the summary counts them.
    false_alarms = [r for r in calm if r["drift"]]
    assert (
        f"false alarms: {len(false_alarms)} of {len(calm)} reports of windows that ended before "
        "the drift were flagged (each tested at significance 0.01)"
    ) in result.stdout
    # Each report's test flags a calm window in at most about 1% of them; the demo's full windows
    # (about 400 events per key) almost never, its partial first windows in 0.3-1.4% (simulated
    # from the demo's baseline). So of the ~130 calm reports, 4 or more flags has a probability
    # below 1e-3, and a false alarm with p < 1e-6 below 1e-4: either means drifted events reached
    # windows that ended before the injected moment (an event-time error), where p is ~1e-12.
    assert len(false_alarms) <= 3, false_alarms
    assert all(r["p_value"] >= 1e-6 for r in false_alarms), false_alarms

    # The drift is flagged in a window that holds drifted events (one that ended after the injected
    # moment), and the summary names the earliest.
    flagged = sorted((r for r in after if r["drift"]), key=lambda r: r["window_end"])
    assert flagged, "no window was flagged after the drift"
    first = flagged[0]
    first_start, first_end = _utc(first["window_start"]), _utc(first["window_end"])
    assert (
        f"drift first flagged: window {first_start:%H:%M:%S}-{first_end:%H:%M:%S} "
        f"({first['key']}, {first['feature']}, "
    ) in result.stdout
    # Every window wholly after the drift with most of its events is flagged for latency_ms.
    late = [
        r for r in after if _utc(r["window_start"]) >= drift_at and r["feature"] == "latency_ms"
    ]
    assert late and all(r["drift"] for r in late if r["count"] >= 300), late

    plots = out / "plots"
    for name in ("kl_latency_ms.png", "kl_payload_country.png", "top_bins.png", "index.html"):
        assert (plots / name).stat().st_size > 1000, name
    assert (plots / "kl_latency_ms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img src="data:image/png;base64,' in (plots / "index.html").read_text()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
