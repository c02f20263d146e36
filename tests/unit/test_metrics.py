"""Metrics: labelled children are remembered and still count in the registry; every label
value is from a closed set; each daemon's registry holds its own families only."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from trackmilter import __version__
from trackmilter.follow import Position, save_position
from trackmilter.metrics import (
    BOUNCE_REASONS,
    DAEMONS,
    ENHANCED_CODES,
    FAMILIES,
    VERDICT_REASONS,
    FollowerLag,
    Metrics,
)
from trackmilter.mta.report_queue import ReportQueue, decode_report
from trackmilter.reports import decode
from trackmilter.verdict import WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "milter" / "trackmilter"
CORPUS = ROOT / "tests" / "corpus"


def test_child_is_remembered_and_counts() -> None:
    registry = CollectorRegistry()
    m = Metrics(registry)
    first = m.child(m.messages, "outgoing", "rewritten")
    assert m.child(m.messages, "outgoing", "rewritten") is first
    assert m.child(m.messages, "inbound", "recorded") is not first
    first.inc()
    m.child(m.messages, "outgoing", "rewritten").inc()
    m.child(m.callback_seconds, "eom").observe(0.002)
    value = registry.get_sample_value(
        "trackmilter_milter_messages_total", {"direction": "outgoing", "action": "rewritten"})
    assert value == 2.0
    count = registry.get_sample_value(
        "trackmilter_milter_callback_duration_seconds_count", {"callback": "eom"})
    assert count == 1.0


# -- bounded labels -----------------------------------------------------------------------


def label_values(m: Metrics, family: str, label: str) -> set[str]:
    return {s.labels[label] for f in m.registry.collect() if f.name == family
            for s in f.samples}


@pytest.mark.parametrize(("kind", "action", "counted"), [
    ("dsn", "failed", "failed"), ("dsn", "delayed", "delayed"), ("dsn", "relayed", "relayed"),
    ("dsn", "expanded", "expanded"), ("dsn", "delivered", "delivered"),
    ("dsn", "Failed ", "failed"), ("dsn", "deliverable", "other"), ("dsn", "displayed", "other"),
    ("mdn", "displayed", "displayed"), ("mdn", "deleted", "deleted"),
    ("mdn", "dispatched", "dispatched"), ("mdn", "processed", "processed"),
    ("mdn", "failed", "other"), ("mdn", "denied", "other"),
    ("arf", "abuse", "abuse"), ("arf", "auth-failure", "auth-failure"),
    ("arf", "opt-out", "other"), ("dsn", "none", "none"),
    ("dsn", "x" * 500, "other"),
])
def test_report_action_is_from_its_rfc(kind: str, action: str, counted: str) -> None:
    m = Metrics(CollectorRegistry())
    m.child(m.report_recipients, kind, action, "userunknown").inc()
    assert m.registry.get_sample_value("trackmilter_reports_recipients_total", {
        "kind": kind, "action": counted, "reason": "userunknown"}) == 1


def test_a_remote_sender_cannot_create_series() -> None:
    """Thousands of distinct values from outside make one `other` series per family, and
    the children remembered stay as few (the cache is keyed by the bounded values)."""
    m = Metrics(CollectorRegistry())
    for i in range(2000):
        m.child(m.report_recipients, "dsn", f"action-{i}", f"reason-{i}").inc()
        m.child(m.report_recipients, f"kind-{i}", "failed", "none").inc()
        m.child(m.recipients, "refused", f"5.7.{600 + i}").inc()
        m.child(m.delivery_outcomes, "bounced", f"5.{i + 8}.1", "other").inc()
        m.child(m.hit_reasons, "click", f"reason-{i}").inc()
        m.child(m.hits, f"target-{i}", f"verdict-{i}").inc()
    assert label_values(m, "trackmilter_reports_recipients", "action") == {"other"}
    assert label_values(m, "trackmilter_reports_recipients", "reason") == {"other", "none"}
    assert label_values(m, "trackmilter_milter_recipients", "enhanced_code") == {"other"}
    assert label_values(m, "trackmilter_delivery_outcomes", "enhanced_code") == {"other"}
    assert label_values(m, "trackmilter_tracker_hit_reasons", "reason") == {"other"}
    assert label_values(m, "trackmilter_tracker_hits", "verdict") == {"other"}
    assert len(m._children) <= 10


@pytest.mark.parametrize(("code", "counted"), [
    ("5.1.1", "5.1.1"), ("4.7.1", "4.7.1"), ("2.0.0", "2.0.0"), ("5.7.26", "5.7.26"),
    ("4.4.7", "4.4.7"), ("5.1.10", "5.1.10"), ("", ""), ("5.7.606", "other"),
    ("3.1.1", "other"), ("5.1.1 ", "other"), ("550", "other"), ("5.9.0", "other"),
])
def test_enhanced_codes_are_iana_registered_or_other(code: str, counted: str) -> None:
    m = Metrics(CollectorRegistry())
    m.child(m.recipients, "refused", code).inc()
    m.child(m.delivery_outcomes, "bounced", code, "other").inc()
    get = m.registry.get_sample_value
    assert get("trackmilter_milter_recipients_total",
               {"outcome": "refused", "enhanced_code": counted}) == 1
    assert get("trackmilter_delivery_outcomes_total",
               {"outcome": "bounced", "enhanced_code": counted, "provider": "other"}) == 1


def test_every_reason_code_the_judges_weigh_is_counted_by_name() -> None:
    assert set(WEIGHTS) <= VERDICT_REASONS


def test_every_reason_and_action_the_decoder_gives_the_corpus_is_counted_by_name() -> None:
    """The bounce reasons (sisimai's vocabulary) the decoder gives real reports are all in
    BOUNCE_REASONS: a new reason in the decoder must be added there, not become `other`."""
    m = Metrics(CollectorRegistry())
    decoded = 0
    for path in sorted(CORPUS.rglob("*.eml")):
        try:
            report = decode(path.read_bytes())
        except Exception:  # noqa: BLE001, S112 - the decoder's own tests cover its failures
            continue
        if report is None:
            continue
        decoded += 1
        for r in report.recipients:
            assert (r.reason or "none") in BOUNCE_REASONS, (path, r.reason)
            action = r.feedback_type if report.kind == "arf" else r.action
            m.child(m.report_recipients, str(report.kind), action or "none", r.reason or "none")
    assert decoded > 100
    assert {"failed", "delayed", "abuse"} <= label_values(
        m, "trackmilter_reports_recipients", "action")


def test_every_labelled_family_is_bounded_or_ours() -> None:
    """A labelled family either maps its values through closed sets in `child`, or every
    value it is given is ours (a constant, an enum) or already bounded by configuration."""
    ours = {
        "trackmilter_build_info",  # the version
        "trackmilter_milter_messages",  # Direction and what the milter did: constants
        "trackmilter_milter_callback_duration_seconds",  # the callbacks' names
        "trackmilter_reports_skipped",  # constants of the milter
        "trackmilter_edge_lines",  # constants of edge
        "trackmilter_webhook_deliveries",  # configured endpoints (redacted) and constants
        "trackmilter_webhook_queue_events",  # configured endpoints (redacted)
    }
    m = Metrics(CollectorRegistry())
    labelled = {list(metric.describe())[0].name: metric for metric in vars(m).values()
                if isinstance(metric, MetricWrapperBase) and metric._labelnames}
    unbounded = {name for name, metric in labelled.items() if id(metric) not in m._bounds}
    assert unbounded == ours


def test_enhanced_code_vocabulary() -> None:
    assert len(ENHANCED_CODES) == 3 * 81 + 1  # X.0.0, X.1.0-10, X.2.0-4 ... X.7.0-30
    assert all(re.fullmatch(r"[245]\.\d\.\d{1,2}", c) for c in ENHANCED_CODES - {""})


# -- a registry per daemon ------------------------------------------------------------------


def exposed(m: Metrics) -> set[str]:
    return {f.name for f in m.registry.collect()}


def test_each_daemon_exports_only_its_own_families() -> None:
    every = exposed(Metrics(CollectorRegistry()))
    owners: dict[str, set[str]] = {}
    for family in FAMILIES:
        names = exposed(Metrics(CollectorRegistry(), families={family})) - {
            "trackmilter_build_info"}
        assert names, family
        for name in names:
            owners.setdefault(name, set()).add(family)
    assert all(len(o) == 1 for o in owners.values()), owners
    assert set(owners) | {"trackmilter_build_info"} == every
    for daemon, families in DAEMONS.items():
        names = exposed(Metrics.for_daemon(daemon))
        ours = {n for n in names if n.startswith("trackmilter_")}
        expected = {n for n, o in owners.items() if o & families} | {"trackmilter_build_info"}
        assert ours == expected, daemon
        assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info",
                "python_gc_collections"} <= names, daemon
        text = generate_latest(Metrics.for_daemon(daemon).registry).decode()
        assert "_created" not in text, daemon


def test_the_milter_shows_no_tracker_and_the_tracker_no_milter() -> None:
    milter = exposed(Metrics.for_daemon("milter"))
    web = exposed(Metrics.for_daemon("web"))
    webhooks = exposed(Metrics.for_daemon("webhooks"))
    assert "trackmilter_tracker_hits" not in milter
    assert "trackmilter_milter_messages" in milter and "trackmilter_milter_messages" not in web
    assert {n for n in webhooks if n.startswith("trackmilter_")} == {
        "trackmilter_build_info", "trackmilter_webhook_deliveries",
        "trackmilter_webhook_queue_events"}


def test_a_family_not_asked_for_still_counts_but_is_not_exported() -> None:
    m = Metrics.for_daemon("webhooks")
    m.child(m.hits, "click", "human").inc()  # shared code may count into it: no error
    assert m.registry.get_sample_value(
        "trackmilter_tracker_hits_total", {"target": "click", "verdict": "human"}) is None


def test_unknown_family_refused() -> None:
    with pytest.raises(ValueError, match="unknown metric families"):
        Metrics(CollectorRegistry(), families={"milter", "trackers"})


# Which code counts into which daemon's metrics: every metric a module touches must be in the
# families of each daemon that runs it (else its counts would go to the unexported registry).
DAEMON_MODULES = {
    "milter": ["mta/session.py", "mta/report_queue.py", "mta/budget.py", "mta/runner.py",
               "store/writer.py"],
    "maillog": ["maillog/daemon.py", "judging.py", "store/writer.py"],
    "web": ["web/app.py", "web/server.py", "web/revisions.py", "judging.py",
            "store/writer.py"],
    # web/app.py's HTTP path (_hit: request_seconds) is not what edge calls (ingest).
    "edge": ["web/edge.py", "web/app.py", "judging.py", "store/writer.py"],
    "webhooks": ["webhooks/deliver.py", "webhooks/outbox.py"],
}
NOT_CALLED = {"edge": {"request_seconds"}}
USE = re.compile(r"(?:\bm|\bmetrics|_metrics)\.(\w+)|_count\(metrics, \"(\w+)\"")


@pytest.mark.parametrize("daemon", sorted(DAEMON_MODULES))
def test_each_daemon_exports_every_metric_its_code_counts(daemon: str) -> None:
    every = Metrics(CollectorRegistry())
    metric_attrs = {a for a, v in vars(every).items() if isinstance(v, MetricWrapperBase)}
    m = Metrics.for_daemon(daemon)
    used: set[str] = set()
    for module in DAEMON_MODULES[daemon]:
        text = (PACKAGE / module).read_text()
        used |= {a or b for a, b in USE.findall(text)} & metric_attrs
    assert used, daemon
    missing = {a for a in used - NOT_CALLED.get(daemon, set())
               if not isinstance(getattr(m, a), MetricWrapperBase)}
    assert missing == set(), daemon


# -- the log follower's lag -----------------------------------------------------------------


def test_follower_lag_from_the_saved_position(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "maillog.state"
    log.write_bytes(b"line one\nline two\n")
    st = log.stat()
    lag = FollowerLag("maillog", log, state, clock=lambda: 1_000_100.0)
    assert lag.measure() is None  # nothing saved yet
    # A large consumer state after the position is never read.
    save_position(state, Position(st.st_dev, st.st_ino, 9, 9, "x"), '{"q": "%s"}' % ("y" * 9999))
    os.utime(state, (1_000_000.0, 1_000_000.0))
    assert lag.measure() == (100.0, 9)
    save_position(state, Position(st.st_dev, st.st_ino, st.st_size, 9, "x"))
    assert lag.measure() == (0.0, 0)
    # Rotated: a new file at the path, the position still in the old one.
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"new\n")
    os.utime(state, (1_000_000.0, 1_000_000.0))
    assert lag.measure() == (100.0, 4)
    assert FollowerLag("maillog", "-", state).measure() is None  # standard input: no file to compare


def test_follower_lag_exported_by_the_maillog_daemon(tmp_path: Path) -> None:
    log, state = tmp_path / "mail.log", tmp_path / "maillog.state"
    log.write_bytes(b"a\nb\n")
    st = log.stat()
    save_position(state, Position(st.st_dev, st.st_ino, 2, 2, "x"))
    m = Metrics.for_daemon("maillog", maillog_file=(str(log), state))
    assert m.registry.get_sample_value("trackmilter_maillog_unread_bytes") == 2
    assert (m.registry.get_sample_value("trackmilter_maillog_unread_seconds") or -1) >= 0
    assert "trackmilter_maillog_unread_seconds" not in exposed(Metrics.for_daemon("edge"))


def test_edge_reports_how_far_behind_its_hit_log_it_is(tmp_path: Path) -> None:
    """trackmilter_edge_lag_seconds only moves when edge stores a hit: a reader that stopped
    keeps its last value. The unread part of the log shows it."""
    log, state = tmp_path / "hits.log", tmp_path / "edge.state"
    log.write_bytes(b"x" * 100)
    st = log.stat()
    save_position(state, Position(st.st_dev, st.st_ino, 40, 40, "x"))
    m = Metrics.for_daemon("edge", edge_file=(log, str(state)))
    assert m.registry.get_sample_value("trackmilter_edge_unread_bytes") == 60
    assert (m.registry.get_sample_value("trackmilter_edge_unread_seconds") or -1) >= 0
    assert "trackmilter_edge_unread_bytes" not in exposed(Metrics.for_daemon("maillog"))


def test_build_info_names_the_mta_of_the_milter_and_the_follower() -> None:
    from trackmilter.rewrite import native

    milter = Metrics.for_daemon("milter", mta="mx1.example.org")
    # The milter says which rewriting engine runs (native|python).
    assert milter.registry.get_sample_value(
        "trackmilter_build_info", {"version": __version__, "mta": "mx1.example.org",
                                   "engine": native.ENGINE}) == 1
    web = Metrics.for_daemon("web")
    assert web.registry.get_sample_value("trackmilter_build_info", {"version": __version__}) == 1


MULTIPROCESS = """
import sys
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from trackmilter.metrics import Metrics
m = Metrics.for_daemon(sys.argv[1])
# What shared code may count: every family, exported or not.
m.child(m.errors, "eom").inc()
m.links_rewritten.inc()
m.store_written.inc()
m.child(m.hits, "click", "human").inc()
m.child(m.request_seconds, "click").observe(0.001)
merged = CollectorRegistry()
multiprocess.MultiProcessCollector(merged)
sys.stdout.write(generate_latest(merged).decode())
"""


def test_multiprocess_mode_exports_only_the_trackers_families(tmp_path: Path) -> None:
    """`trackmilter web` with several workers (PROMETHEUS_MULTIPROC_DIR): every metric a
    worker makes is in the shared files whatever its registry, so a family the tracker does
    not export must make no metric at all."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", MULTIPROCESS, "web"], env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    names = set(re.findall(r"^# TYPE (\S+)", out, re.M))
    assert {"trackmilter_tracker_hits_total", "trackmilter_store_events_written_total",
            "trackmilter_tracker_request_duration_seconds"} <= names
    assert "trackmilter_build_info" in names
    assert not {n for n in names if n.startswith(("trackmilter_milter", "trackmilter_errors",
                                                   "trackmilter_reports", "trackmilter_maillog",
                                                   "trackmilter_webhook", "trackmilter_edge"))}
    assert "_created" not in out


DSN = b"""From: MAILER-DAEMON@mx.example.net
To: alice@example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Your message could not be delivered.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; bob@example.net
Action: %s
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: no such user

--b--
"""


@pytest.mark.parametrize(("action", "counted"), [(b"failed", "failed"),
                                                  (b"x-chosen-by-the-sender-42", "other")])
def test_an_inbound_reports_action_is_counted_in_its_closed_set(action: bytes,
                                                                 counted: str) -> None:
    """The milter's report queue, with the real decoder: whatever a remote sender writes in
    Action, it makes no series of its own."""
    events: list[object] = []

    class Sink:
        def submit(self, event: object) -> None:
            events.append(event)

    m = Metrics.for_daemon("milter")
    q = ReportQueue(decode_report, Sink(), m, structlog.get_logger("test"))
    q.submit(DSN % action, queue_id="4QABC", message_id="<r@mx>", at=datetime.now(UTC),
             mta="mx1")
    q.close()
    assert len(events) == 1
    assert m.registry.get_sample_value("trackmilter_reports_recipients_total", {
        "kind": "dsn", "action": counted, "reason": "userunknown"}) == 1
