"""`kldrift report`: a PNG per feature, the most drifted window's top bins, one HTML page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _reports import make_report

from kldrift.report import latest_revisions
from kldrift.schemas.report import TopBinReport

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))


def test_report_writes_plots_and_a_self_contained_page(tmp_path: Path) -> None:
    reports = [make_report(m, m >= 6, feature=f) for m in range(1, 11) for f in ("a", "b.c")]
    top = [TopBinReport(bin="[5, 10)", window_p=0.6, baseline_q=0.2, contribution_bits=0.95)]
    reports.append(
        make_report(8, True, feature="a", revision=1).model_copy(
            update={"kl_bits_debiased": 0.9, "top_bins": top}
        )
    )
    source = tmp_path / "reports.jsonl"
    source.write_bytes(b"".join(r.to_json_bytes() + b"\n" for r in reports))

    result = subprocess.run(
        [KLDRIFT, "report", "--input", str(source), "--output", str(tmp_path / "plots")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    written = {Path(line.split(" ", 1)[1]).name for line in result.stdout.splitlines()}
    assert written == {"kl_a.png", "kl_b_c.png", "top_bins.png", "index.html"}
    for name in ("kl_a.png", "kl_b_c.png", "top_bins.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "plots" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    # 20 windows, 10 of them drifted (minutes 6-10 for both features), one revised by late data.
    assert "20 windows scored, 10 flagged as drift, 1 revised by late data." in page


def test_latest_revision_of_each_window_wins() -> None:
    final, revised = latest_revisions(
        [make_report(1, False), make_report(1, True, revision=2), make_report(1, False, revision=1)]
    )
    assert [(r.revision, r.drift) for r in final] == [(2, True)]
    assert revised == final


def test_report_needs_exactly_one_source(tmp_path: Path) -> None:
    result = subprocess.run(
        [KLDRIFT, "report", "--output", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "give exactly one of --input FILE or --topic TOPIC" in result.stderr


def test_the_window_plot_shows_every_bin_of_a_version_2_report() -> None:
    from kldrift.report import window_bars

    report = make_report(3, True).model_copy(
        update={
            "bins": ["US", "DE", "__other__"],
            "counts": [30, 10, 60],
            "baseline_q": [0.6, 0.35, 0.05],
            "top_bins": [
                TopBinReport(bin="__other__", window_p=0.6, baseline_q=0.05, contribution_bits=2.15)
            ],
        }
    )
    labels, window_p, baseline_q = window_bars(report)
    assert labels == ["US", "DE", "__other__"]  # all three, not only the one top bin
    assert window_p == [0.3, 0.1, 0.6] and baseline_q == [0.6, 0.35, 0.05]
    # A version-1 report has only its top bins to show.
    assert window_bars(make_report(3, True).model_copy(update={"top_bins": report.top_bins})) == (
        ["__other__"],
        [0.6],
        [0.05],
    )
