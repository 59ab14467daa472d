"""`kldrift report`: drift reports as pictures (matplotlib, the optional `plots` extra) and one
self-contained HTML page."""

from __future__ import annotations

import base64
import html
import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from kldrift.schemas.report import DriftReport, parse_report_record


def load_reports(path: Path) -> list[DriftReport]:
    """The features' reports of a file of report records (window summaries are left out)."""
    records = (parse_report_record(line) for line in path.read_bytes().splitlines() if line.strip())
    return [r for r in records if isinstance(r, DriftReport)]


def latest_revisions(reports: Iterable[DriftReport]) -> tuple[list[DriftReport], list[DriftReport]]:
    """(the latest revision of each window, the windows that were revised by late data)."""
    latest: dict[str, DriftReport] = {}
    for report in reports:
        current = latest.get(report.message_key)
        if current is None or report.revision > current.revision:
            latest[report.message_key] = report
    final = sorted(latest.values(), key=lambda r: r.window_end)
    return final, [r for r in final if r.revision > 0]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_feature(feature: str, reports: list[DriftReport], path: Path) -> Path:
    """KL bits over window end time per key: plug-in and debiased, threshold, drift shaded, late
    revisions marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    by_key: dict[str | None, list[DriftReport]] = defaultdict(list)
    for report in reports:
        if report.kl_bits is not None:
            by_key[report.key].append(report)
    for key, series in sorted(by_key.items(), key=lambda kv: kv[0] or ""):
        ends = [r.window_end for r in series]
        line = ax.plot(ends, [r.kl_bits_debiased for r in series], label=f"{key or 'all'} debiased")
        ax.plot(
            ends,
            [r.kl_bits for r in series],
            linestyle=":",
            color=line[0].get_color(),
            label=f"{key or 'all'} plug-in",
        )
        late = [r for r in series if r.revision > 0]
        if late:
            ax.scatter(
                [r.window_end for r in late],
                [r.kl_bits_debiased for r in late],
                marker="x",
                color="black",
                zorder=3,
                label="revised by late data",
            )
    for report in reports:
        if report.drift:
            ax.axvspan(report.window_start, report.window_end, color="tab:red", alpha=0.04)
    if reports:
        ax.axhline(
            reports[0].threshold_bits,
            color="tab:red",
            linestyle="--",
            label=f"threshold {reports[0].threshold_bits:g} bits",
        )
    ax.set_title(f"KL(window || baseline) for {feature}; red: windows flagged as drift")
    ax.set_xlabel("window end (UTC)")
    ax.set_ylabel("KL divergence (bits)")
    ax.legend(fontsize="small", loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def window_bars(report: DriftReport) -> tuple[list[str], list[float], list[float]]:
    """(bin labels, window shares p, baseline shares q) to draw for one window: every bin of the
    window when the report carries its histogram (schema 2), else its top bins (schema 1)."""
    if report.bins is not None and report.counts is not None and report.baseline_q is not None:
        total = sum(report.counts)
        shares = [c / total if total else 0.0 for c in report.counts]
        return list(report.bins), shares, list(report.baseline_q)
    return (
        [top.bin for top in report.top_bins],
        [top.window_p for top in report.top_bins],
        [top.baseline_q for top in report.top_bins],
    )


def plot_top_bins(report: DriftReport, path: Path) -> Path:
    """One window against the baseline: every bin's window share p beside the baseline's q (only
    the top bins for a schema-1 report), each bar pair labelled with its p log2(p/q) in bits;
    the raw values behind `__other__` in the title."""
    plt = _pyplot()
    labels, window_p, baseline_q = window_bars(report)
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(labels) + 2), 4.5))
    positions = range(len(labels))
    ax.bar([i - 0.2 for i in positions], window_p, width=0.4, label="window p")
    ax.bar([i + 0.2 for i in positions], baseline_q, width=0.4, label="baseline q")
    for i, (p, q) in enumerate(zip(window_p, baseline_q, strict=True)):
        if p > 0 and q > 0:
            ax.annotate(
                f"{p * math.log2(p / q):+.3f} bits",
                (i, max(p, q)),
                ha="center",
                va="bottom",
                fontsize="x-small",
            )
    if len(labels) > 6:
        ax.set_xticks(list(positions), labels, rotation=30, ha="right")
    else:
        ax.set_xticks(list(positions), labels)
    ax.set_ylabel("share of the window / baseline")
    title = (
        f"{report.feature} ({report.key or 'all'}), window ending "
        f"{report.window_end:%Y-%m-%d %H:%M:%S}: KL {report.kl_bits or 0:.3f} bits, "
        f"N = {report.count} events"
    )
    if report.other_values:
        named = ", ".join(f"{o.value} ({o.count})" for o in report.other_values)
        title += f"\n__other__ holds: {named}"
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _chosen_window(reports: list[DriftReport]) -> DriftReport | None:
    """The window with the largest debiased KL: where a reader looks first."""
    scored = [r for r in reports if r.kl_bits_debiased is not None and (r.top_bins or r.counts)]
    return max(scored, key=lambda r: r.kl_bits_debiased or 0.0) if scored else None


def write_report(input_path: Path, out_dir: Path) -> list[Path]:
    """PNGs per feature, the top bins of the most drifted window, and index.html gathering them."""
    final, revised = latest_revisions(load_reports(input_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    by_feature: dict[str, list[DriftReport]] = defaultdict(list)
    for report in final:
        by_feature[report.feature].append(report)
    images = [
        plot_feature(feature, reports, out_dir / f"kl_{_slug(feature)}.png")
        for feature, reports in sorted(by_feature.items())
    ]
    chosen = _chosen_window(final)
    if chosen is not None:
        images.append(plot_top_bins(chosen, out_dir / "top_bins.png"))
    index = out_dir / "index.html"
    index.write_text(_html(images, final, revised))
    return [*images, index]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _html(images: list[Path], final: list[DriftReport], revised: list[DriftReport]) -> str:
    drifted = [r for r in final if r.drift]
    first = min(drifted, key=lambda r: r.window_end) if drifted else None
    facts = [
        f"{len(final)} windows scored, {len(drifted)} flagged as drift, "
        f"{len(revised)} revised by late data.",
        "First drift: "
        + (
            f"{first.feature} ({first.key}), window ending {_iso(first.window_end)}"
            if first
            else "none"
        ),
    ]
    body = "".join(f"<p>{html.escape(f)}</p>" for f in facts)
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode()
        body += f'<h2>{html.escape(image.stem)}</h2><img src="data:image/png;base64,{data}">'
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>kldrift report</title></head>"
        f"<body><h1>kldrift drift report</h1>{body}</body></html>\n"
    )


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
