"""README is the truth: its two commands, its generated config reference and its worked example."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2, chi2_contingency, entropy, ncx2

from kldrift.docs import readme_block
from kldrift.schemas.config import load_config
from kldrift.schemas.report import DriftReport

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_exactly_the_two_commands_and_ci_runs_the_test_one() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None and README.index("```bash") < 200
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo: setup$", makefile, re.M)
    assert re.search(r"^test: setup", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_config_reference_is_generated_from_the_models() -> None:
    assert readme_block() in README, "run `python -m kldrift.docs --write README.md`"


def test_example_config_loads() -> None:
    config = load_config(ROOT / "examples" / "config.yaml")
    assert [f.name for f in config.features] == [
        "latency_ms",
        "amount",
        "payload.country",
        "device",
    ]


def _example_report() -> DriftReport:
    block = re.search(r"```json\n(\{.*?\})\n```", README, re.S)
    assert block is not None
    text = block.group(1).replace('"4df5f0ef5801..."', '"4df5f0ef5801"')
    return DriftReport.model_validate(json.loads(text))


def test_worked_example_values_match_scipy() -> None:
    window, baseline, smoothing = np.array([30.0, 10.0]), np.array([50.0, 50.0]), 0.5
    p = window / window.sum()
    q = (baseline + smoothing) / (baseline.sum() + 2 * smoothing)
    report = _example_report()

    assert report.kl_bits == pytest.approx(entropy(p, q, base=2), abs=1e-12)
    assert report.entropy_bits == pytest.approx(entropy(p, base=2), abs=1e-12)
    assert report.cross_entropy_bits == pytest.approx(-(p * np.log2(q)).sum(), abs=1e-12)
    bias = (2 - 1) * (1 / 40 + 1 / 100) / (2 * math.log(2))
    assert report.kl_bits_debiased == pytest.approx(entropy(p, q, base=2) - bias, abs=1e-12)
    table = np.array([window, baseline])
    g = chi2_contingency(table, correction=False, lambda_="log-likelihood").statistic
    williams = 1 + (140 * (1 / 40 + 1 / 100) - 1) * (140 * (1 / 80 + 1 / 60) - 1) / (6 * 140)
    assert report.p_value == pytest.approx(chi2.sf(g / williams, 1), rel=1e-9, abs=0)
    noncentrality = 2 * math.log(2) * (40 * 100 / 140) * 0.05
    assert report.p_value_above_threshold == pytest.approx(
        ncx2.sf(g / williams, 1, noncentrality), rel=1e-9
    )
    assert report.q_value == pytest.approx(report.p_value, rel=1e-12)  # one test: q = p
    assert report.counts == [30, 10] and report.baseline_q == pytest.approx(list(q), abs=1e-15)
    assert report.js_bits == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    p_smoothed = (window + smoothing) / (window.sum() + 2 * smoothing)
    assert report.psi == pytest.approx(((p_smoothed - q) * np.log(p_smoothed / q)).sum(), abs=1e-12)
    assert report.drift is True
    assert report.top_bins[0].contribution_bits == pytest.approx(0.75 * math.log2(1.5), abs=1e-12)
    # The prose states the same numbers, rounded.
    for figure in ("0.188722", "0.811278", "0.163475", "0.006202", "0.438722", "0.091833"):
        assert figure in README
