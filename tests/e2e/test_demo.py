"""README's run command in a short mode: the demo starts its own broker and job, flags drift only
after the injected moment, writes plots, and stops everything."""

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
    flagged = sorted((r for r in reports if r["drift"]), key=lambda r: r["window_end"])
    assert flagged, "no window was flagged"
    config = (out / "config.yaml").read_text()
    assert "demo.events." in config
    drift_at = _utc(injected.rsplit("at ", 1)[1].split(" ")[0])  # RFC 3339, event time
    first_end = _utc(flagged[0]["window_end"])
    first_start = _utc(flagged[0]["window_start"])
    # The first flagged window holds drifted events: it ends after the injected moment...
    assert first_end > drift_at
    # ...and no window that ended before the drift was flagged.
    calm = [r for r in reports if _utc(r["window_end"]) <= drift_at]
    assert calm and not any(r["drift"] for r in calm)
    assert first_start < first_end

    plots = out / "plots"
    for name in ("kl_latency_ms.png", "kl_payload_country.png", "top_bins.png", "index.html"):
        assert (plots / name).stat().st_size > 1000, name
    assert (plots / "kl_latency_ms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<img src="data:image/png;base64,' in (plots / "index.html").read_text()


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
