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
from prometheus_client.metrics import MetricWrapperBase

from trackmilter.follow import Position, save_position
from trackmilter.metrics import DAEMONS, Metrics

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


# Labels every series has (the target's) or that PromQL makes (histograms' le).
TARGET_LABELS = {"job", "instance", "le"}
SELECTOR = re.compile(r"(?<![\w:])(trackmilter_[a-z_]+|trackmilter:[a-z0-9_:]+|up)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def label_names() -> dict[str, set[str]]:
    """Each exposed metric name (counters with _total, histograms' series) -> its labels."""
    m = Metrics(CollectorRegistry(), mta="mx1")
    names: dict[str, set[str]] = {"up": set(), "trackmilter_build_info": {"version", "mta"}}
    for metric in vars(m).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        family = next(iter(metric.describe()))
        labels = set(metric._labelnames)
        for suffix in ("", "_total", "_bucket", "_count", "_sum"):
            names[family.name + suffix] = labels
    for family in m.registry.collect():  # collectors of our own (the follower's lag)
        names.setdefault(family.name, set())
    return names


def unknown_labels(expr: str, recorded: dict[str, set[str]] | None = None) -> list[str]:
    """Label names in selectors and groupings that the metrics named in `expr` do not have
    (a label renamed in the code but not in a query)."""
    known = {**label_names(), **(recorded or {})}
    used = [n for n in METRIC.findall(expr) + RECORDED.findall(expr) + ["up"] * ("up{" in expr)]
    allowed = TARGET_LABELS.union(*(known.get(n, set()) for n in used))
    bad = []
    for name, matchers in SELECTOR.findall(expr):
        bad += [f"{name}{{{label}}}" for label in MATCHER.findall(matchers)
                if label not in known.get(name, set()) | TARGET_LABELS]
    for grouping in GROUPING.findall(expr):
        bad += [label for label in re.findall(r"\w+", grouping) if label not in allowed]
    return bad


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


def exercised(m: Metrics) -> Metrics:
    """Every labelled family with a child or more (a family only some daemons export is
    counted into all the same: it goes to a registry nobody scrapes)."""
    m.child(m.messages, "outgoing", "rewritten").inc()
    m.child(m.recipients, "refused", "5.1.1").inc()
    m.child(m.callback_seconds, "eom").observe(0.002)
    m.child(m.report_recipients, "dsn", "failed", "userunknown").inc()
    m.child(m.reports, "dsn").inc()
    m.child(m.maillog_deliveries, "sent").inc()
    m.child(m.delivery_outcomes, "bounced", "5.1.1", "gmail").inc()
    m.child(m.delivery_delay, "sent").observe(3.5)
    m.child(m.hits, "click", "machine").inc()
    m.child(m.hit_reasons, "click", "scanner_user_agent").inc()
    m.child(m.request_seconds, "click").observe(0.001)
    m.child(m.invalid_tokens, "open").inc()
    m.child(m.verdict_revisions, "open", "machine").inc()
    m.child(m.edge_lines, "hit").inc()
    m.edge_lag.set(1.5)
    m.child(m.webhook_deliveries, "https://hooks.example.net/tm", "gave_up").inc()
    m.child(m.webhook_queue, "https://hooks.example.net/tm").set(4)
    m.child(m.errors, "eom").inc()
    m.store_queue.set(3)
    m.spool_events.set(1)
    m.store_batch_seconds.observe(0.02)
    m.store_written.inc(10)
    return m


def check_metrics(text: str) -> None:
    result = promtool("check", "metrics", stdin=text)
    # promtool exits non-zero on lint problems and names them on stdout/stderr.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


@needs_promtool
def test_promtool_check_metrics_on_exposition() -> None:
    check_metrics(generate_latest(exercised(Metrics(CollectorRegistry())).registry).decode())


@needs_promtool
@pytest.mark.parametrize("daemon", sorted(DAEMONS))
def test_promtool_check_metrics_on_each_daemon(daemon: str, tmp_path: Path) -> None:
    """What each daemon serves: its families, process_* and python_*, no _created."""
    log, state = tmp_path / "mail.log", tmp_path / "maillog.state"
    log.write_bytes(b"a line\n")
    save_position(state, Position(0, 0, 0, 0, ""))  # another file: the whole log unread
    m = exercised(Metrics.for_daemon(daemon, mta="mx1.example.org",
                                     maillog_file=(log, state)))
    text = generate_latest(m.registry).decode()
    check_metrics(text)
    assert "process_cpu_seconds_total" in text and "python_info" in text
    assert "_created" not in text


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


# -- labels, instances, alerts and the dashboard's variables ---------------------------------------


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def test_dashboard_names_only_real_labels() -> None:
    unknown = {expr: bad for expr in dashboard_exprs() if (bad := unknown_labels(expr))}
    assert unknown == {}


def test_rules_name_only_real_labels() -> None:
    all_rules = rules()
    # A recording rule's series have the labels it aggregates by.
    recorded: dict[str, set[str]] = {}
    for r in all_rules:
        if "record" in r:
            by = re.search(r"\bby \(([^)]*)\)", r["expr"])
            recorded[r["record"]] = set(re.findall(r"\w+", by.group(1))) if by else set()
    for r in all_rules:
        for r2 in RECORDED.findall(r["expr"]):
            recorded.setdefault(r2, set())
    # ratio rules divide `ignoring (outcome)`: their series keep job and instance only
    unknown = {r.get("alert") or r["record"]: bad for r in all_rules
               if (bad := unknown_labels(r["expr"], recorded))}
    assert unknown == {}
    for r in all_rules:
        for text in r.get("annotations", {}).values():
            for query in re.findall(r'query \(printf "([^"]*)"', text):
                assert unknown_labels(query.replace("'", '"')) == [], (r["alert"], query)


def test_every_panel_shows_only_the_chosen_instances() -> None:
    for expr in dashboard_exprs():
        names = METRIC.findall(expr) + re.findall(r"(?<![\w:])up(?=\{)", expr)
        scoped = [n for n, matchers in SELECTOR.findall(expr) if 'instance=~"$instance"' in matchers]
        assert names and sorted(scoped) == sorted(names), expr


def test_dashboard_chooses_the_mta_then_its_instances() -> None:
    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert {"datasource", "mta", "instance"} <= set(variables)
    assert variables["mta"]["query"]["query"] == "label_values(trackmilter_build_info, mta)"
    assert '{mta=~"$mta"}' in variables["instance"]["query"]["query"]
    assert unknown_metrics(variables["instance"]["query"]["query"]) == []
    # All MTAs includes the processes that serve none (no mta label): .* matches "".
    assert variables["mta"]["allValue"] == ".*"
    # All instances: those of the chosen MTAs, not every instance.
    assert "allValue" not in variables["instance"]


def test_dashboard_shows_webhooks_and_the_followers_lag() -> None:
    exprs = " ".join(dashboard_exprs())
    for wanted in ('trackmilter_webhook_deliveries_total{instance=~"$instance", outcome="gave_up"}',
                   'trackmilter_webhook_deliveries_total{instance=~"$instance", outcome="delivered"}',
                   "sum by (endpoint, outcome) (rate(trackmilter_webhook_deliveries_total",
                   "trackmilter_webhook_queue_events", "trackmilter_edge_lag_seconds",
                   "trackmilter_maillog_unread_seconds"):
        assert wanted in exprs, wanted


def test_alerts_for_webhooks_and_the_followers_lag() -> None:
    by_name = {r["alert"]: r["expr"] for r in rules() if "alert" in r}
    assert 'outcome="gave_up"' in by_name["TrackmilterWebhooksGivingUp"]
    assert "trackmilter_webhook_queue_events" in by_name["TrackmilterWebhooksBackingUp"]
    assert "trackmilter_edge_lag_seconds" in by_name["TrackmilterEdgeLagging"]
    assert "trackmilter_maillog_unread_seconds" in by_name["TrackmilterMaillogLagging"]
