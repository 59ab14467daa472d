"""deploy/monitoring, checked offline with promtool (Debian's prometheus package, installed by the
set-up): the alert rules load and fire on the series of their unit tests, the exporter's metric
names pass Prometheus's lint, and the dashboard and the rules query only metrics the exporter
serves."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from _reports import make_report
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kldrift.cli import build_parser
from kldrift.exporter import DriftMetrics
from kldrift.local import prometheus

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
K8S = ROOT / "deploy" / "flink" / "k8s"
METRIC = re.compile(r"\bkldrift_[a-z_]+\b")


def promtool() -> Path:
    try:
        return prometheus.require()[1]
    except prometheus.PrometheusSetupError as err:
        pytest.fail(str(err))


def _exposition() -> str:
    """A scrape of an exporter that has seen every kind of record."""
    metrics = DriftMetrics("p", window_size_s=600, window_period_s=60, max_pairs=1)
    metrics.offer_report(make_report(3, drift=True), time.time())
    metrics.offer_report(make_report(3, drift=True, feature="amount"), time.time())  # capped
    metrics.offer_report(make_report(3, drift=True, pipeline="other"), time.time())
    metrics.offer_dead_letter("not_json")
    metrics.offer_unreadable("reports")
    metrics.set_input_offsets(end_offsets=100, lag_records=7)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    return generate_latest(registry).decode()


def _exported_names() -> set[str]:
    return {
        sample.name
        for family in text_string_to_metric_families(_exposition())
        for sample in family.samples
    }


def _dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "dashboard.json").read_text())


def _dashboard_queries() -> list[str]:
    dashboard = _dashboard()
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    variables = dashboard["templating"]["list"]
    queries += [v["query"]["query"] for v in variables if v["type"] == "query"]
    return queries


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_alert_rules_load_and_fire_on_their_unit_test_series() -> None:
    tool = str(promtool())
    checked = subprocess.run(
        [tool, "check", "rules", "alerts.yaml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = subprocess.run(
        [tool, "test", "rules", "alerts.test.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert of the rule file has a unit test.
    test_file = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())
    tested_alerts = {
        case["alertname"] for test in test_file["tests"] for case in test["alert_rule_test"]
    }
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"][0]["rules"]
    assert tested_alerts == {rule["alert"] for rule in rules}


def test_exported_metric_names_pass_prometheus_lint_but_for_bits() -> None:
    linted = subprocess.run(
        [str(promtool()), "check", "metrics"], input=_exposition(), capture_output=True, text=True
    )
    problems = (linted.stdout + linted.stderr).strip().splitlines()
    # promtool knows bits only as a size of data (base unit bytes); kldrift's bits measure
    # information (log base 2), the unit its reports carry.
    assert problems, "the lint runs and names the bits metrics"
    for problem in problems:
        assert problem.endswith('use base unit "bytes" instead of "bits"'), problem


def test_dashboard_and_rules_query_only_metrics_the_exporter_serves() -> None:
    exported = _exported_names()
    for query in [*_dashboard_queries(), *_rule_exprs()]:
        names = set(METRIC.findall(query))
        assert names, query
        assert names <= exported, f"{sorted(names - exported)} in {query!r}"


def test_dashboard_shows_what_an_operator_watches() -> None:
    dashboard = _dashboard()
    panels = dashboard["panels"]
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels}

    def panel_with(*needles: str) -> str:
        found = [t for t, q in by_title.items() if all(n in q for n in needles)]
        assert found, f"no panel queries {needles}"
        return found[0]

    assert "bits" in panel_with("kldrift_kl_debiased_bits", "kldrift_drift_threshold_bits")
    assert panel_with("kldrift_drift{")
    assert "(s)" in panel_with("kldrift_report_lag_seconds")
    assert "by (pipeline, reason)" in by_title[panel_with("kldrift_dead_letters_total")]
    assert panel_with("kldrift_input_consumer_lag_records")
    # Every panel queries the chosen Prometheus; ids are unique; no two panels overlap.
    assert {p["datasource"]["uid"] for p in panels} == {"${datasource}"}
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [
        (p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy)
        for p in panels
        for dx in range(p["gridPos"]["w"])
        for dy in range(p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells)), "panels overlap"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


def test_the_k8s_exporter_runs_kldrift_exporter_on_the_jobs_config_and_is_scraped() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all((K8S / "exporter.yaml").read_text())}
    deployment, service = docs["Deployment"], docs["Service"]
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    args = build_parser().parse_args([*container["command"][1:], *container["args"]])
    assert container["command"][0] == "kldrift" and args.command == "exporter"
    assert container["image"] == "kldrift-worker"
    # The submitter's config: the same ConfigMap, mounted where --config points.
    configmap = yaml.safe_load((K8S / "configmap.yaml").read_text())["metadata"]["name"]
    volume = next(v["name"] for v in pod["spec"]["volumes"] if v["configMap"]["name"] == configmap)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume)
    assert str(Path(args.config).parent) == mount["mountPath"]
    # One port everywhere: the exporter's, the container's, the Service's, the annotations'.
    (port,) = container["ports"]
    assert port["containerPort"] == args.port
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["metadata"]["labels"].items() >= service["spec"]["selector"].items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    for scrape in (pod["metadata"]["annotations"], service["metadata"]["annotations"]):
        assert scrape["prometheus.io/scrape"] == "true"
        assert scrape["prometheus.io/port"] == str(args.port)
        assert scrape["prometheus.io/path"] == "/metrics"
    assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"


def _readme_section(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index(f"\n## {heading}")
    end = readme.find("\n## ", start + 1)
    return readme[start:end]


def test_readme_lists_exactly_the_metrics_the_exporter_serves() -> None:
    section = _readme_section("Monitoring and alerts")
    documented = {
        name
        for line in section.splitlines()
        if line.startswith("| `kldrift_")
        for name in re.findall(r"`(kldrift_[a-z_]+)", line.split("|")[1])
    }
    families = {
        f.name + ("_total" if f.type == "counter" else "")
        for f in text_string_to_metric_families(_exposition())
    }
    assert documented == families


def _options(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {
        s for a in sub.choices[command]._actions for s in a.option_strings if s.startswith("--")
    } - {"--help"}


def test_readme_documents_every_watch_and_exporter_option() -> None:
    watch = _readme_section("Acting on drift: `kldrift watch`")
    for option in _options("watch"):
        assert f"`{option}`" in watch, option
    exporter = _readme_section("Monitoring and alerts")
    for option in _options("exporter"):
        assert f"`{option}`" in exporter, option
