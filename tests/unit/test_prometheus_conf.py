"""conf/prometheus and conf/grafana: promtool accepts them and they name only real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from trackmilter.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "conf" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "trackmilter-rules.yml"
RULES_TEST = PROMETHEUS / "trackmilter-rules.test.yml"
DASHBOARD = ROOT / "conf" / "grafana" / "trackmilter.json"

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian: apt-get install prometheus; CI installs it)",
)

# A metric name in PromQL; not preceded by a word character or ':' so recording rules
# (trackmilter:delivery_outcomes:increase30m) and label values are not taken for metrics.
METRIC = re.compile(r"(?<![\w:])trackmilter_[a-z_]+")
RECORDED = re.compile(r"(?<![\w:])trackmilter:[a-z0-9_:]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Grafana's variables, replaced by durations so promtool can parse the expressions.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m"}


def exposed_names() -> tuple[set[str], set[str]]:
    """Metric names a fresh registry exposes, and the histograms among them (base names)."""
    names: set[str] = set()
    histograms: set[str] = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")  # the family name drops the suffix
        elif family.type == "info":
            names.add(family.name + "_info")
        else:
            names.add(family.name)
        if family.type == "histogram":
            histograms.add(family.name)
    return names, histograms


def unknown_metrics(expr: str) -> list[str]:
    names, histograms = exposed_names()
    missing = []
    for name in METRIC.findall(expr):
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in histograms:
                name = name[: -len(suffix)]
                break
        if name not in names:
            missing.append(name)
    return missing


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, timeout=120,
        cwd=PROMETHEUS, check=False,
    )


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel, rows' collapsed children included, rows themselves excluded."""
    found: list[dict[str, Any]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            if panel.get("type") == "row":
                walk(panel.get("panels", []))
            else:
                found.append(panel)

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def rules() -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the rules file")
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


# -- promtool ---------------------------------------------------------------------------


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("check", "config", CONFIG.name), id="check-config"),
        pytest.param(("check", "rules", RULES.name), id="check-rules"),
        pytest.param(("test", "rules", RULES_TEST.name), id="test-rules"),
    ],
)
def test_promtool_accepts(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_check_metrics_on_exposition() -> None:
    m = Metrics(CollectorRegistry())
    m.child(m.messages, "outgoing", "rewritten").inc()
    m.child(m.recipients, "refused", "5.1.1").inc()
    m.child(m.callback_seconds, "eom").observe(0.002)
    m.child(m.delivery_outcomes, "bounced", "5.1.1", "gmail").inc()
    m.child(m.delivery_delay, "sent").observe(3.5)
    m.child(m.hits, "click", "machine").inc()
    m.child(m.hit_reasons, "click", "scanner_ua").inc()
    m.child(m.invalid_tokens, "open").inc()
    m.child(m.errors, "eom").inc()
    m.store_queue.set(3)
    m.spool_events.set(1)
    m.store_batch_seconds.observe(0.02)
    m.store_written.inc(10)
    text = generate_latest(m.registry).decode()
    result = promtool("check", "metrics", stdin=text)
    # promtool exits non-zero on lint problems and names them on stdout/stderr.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


# -- the dashboard ----------------------------------------------------------------------


def test_every_dashboard_panel_has_a_target() -> None:
    panels = dashboard_panels()
    assert panels
    empty = [p.get("title") for p in panels if not [t for t in p.get("targets", []) if t.get("expr")]]
    assert empty == []


def test_dashboard_names_only_real_metrics() -> None:
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    assert exprs
    unknown = {expr: missing for expr in exprs if (missing := unknown_metrics(expr))}
    assert unknown == {}
    # Every expression reads at least one trackmilter metric (or `up`).
    assert [e for e in exprs if not METRIC.search(e) and not e.startswith("up")] == []


@needs_promtool
def test_dashboard_promql_parses(tmp_path: Path) -> None:
    # promtool has no "check expression": wrap each one in a recording rule.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, panel in enumerate(dashboard_panels()):
        for target in panel["targets"]:
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            lines += [f"      - record: dashboard:panel{i}:{target['refId']}",
                      f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(lines) + "\n")
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- the rules --------------------------------------------------------------------------


def test_rules_name_only_real_metrics() -> None:
    all_rules = rules()
    recorded = {r["record"] for r in all_rules if "record" in r}
    unknown = {r.get("alert") or r["record"]: missing
               for r in all_rules if (missing := unknown_metrics(r["expr"]))}
    assert unknown == {}
    # Recording rules used by other rules are defined in the file.
    used = {name for r in all_rules for name in RECORDED.findall(r["expr"])}
    assert used <= recorded
    # Metrics named inside annotation templates (query "...") exist too.
    for r in all_rules:
        for text in r.get("annotations", {}).values():
            assert unknown_metrics(text) == [], (r["alert"], text)


def test_every_alert_has_severity_summary_description() -> None:
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) >= 10
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning", "info"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        assert alert["annotations"]["description"], alert["alert"]


def test_every_alert_is_unit_tested() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the rules tests")
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a non-firing case"
