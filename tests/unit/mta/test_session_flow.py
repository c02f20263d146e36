"""Flow: pymilter's test context drives the real callbacks, in libmilter's order."""

from __future__ import annotations

import email
import email.policy
import threading
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import Milter
import pytest
import structlog
from Milter.testctx import TestCtx as MilterTestCtx
from prometheus_client import CollectorRegistry

from trackmilter.config import Settings, TrackingSettings
from trackmilter.metrics import Metrics
from trackmilter.model import Direction, EndReason, MessageRecorded, RcptOutcome
from trackmilter.mta.session import Deps, Session
from trackmilter.tokens import Kind, Signer

BASE = "https://t.example"
SIGNER = Signer([b"k" * 32])

HTML_MSG = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"List-Unsubscribe: <https://example.com/unsub>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b'<html><body><p><a href="https://example.com/a?x=1&amp;y=2">A</a>\r\n'
    b'<a href="mailto:x@example.com">mail</a></p></body></html>\r\n'
)


@dataclass
class ListSink:
    events: list[MessageRecorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, event: MessageRecorded) -> None:
        with self.lock:
            self.events.append(event)


# TestCtx treats NOREPLY as "stop" (it predates protocol 6); offer it an MTA without the
# no-reply steps, as older Sendmail is. Postfix's real negotiation is covered by miltertest
# and the integration tests.
_NR_BITS = (Milter.P_NR_CONN | Milter.P_NR_HELO | Milter.P_NR_MAIL | Milter.P_NR_RCPT
            | Milter.P_NR_DATA | Milter.P_NR_UNKN | Milter.P_NR_EOH | Milter.P_NR_BODY
            | Milter.P_NR_HDR)


@pytest.fixture(autouse=True)
def _no_noreply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MilterTestCtx, "default_opts", [Milter.CURR_ACTS, 0x1FFFFF & ~_NR_BITS, 0, 0])


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def make_deps(sink: ListSink, **tracking: Any) -> Deps:
    t = TrackingSettings(**{"base_url": BASE, **tracking})
    settings = Settings(tracking=t)
    return Deps(settings=settings, signer=SIGNER if t.base_url else None, sink=sink,
                metrics=Metrics(CollectorRegistry()), log=structlog.get_logger("test"))


@dataclass
class Outcome:
    ctx: MilterTestCtx
    body: bytes
    replaced: bool
    headers: dict[str, str]


def run(deps: Deps, raw: bytes, *, sender: str = "<alice@example.com>",
        mail_params: tuple[str, ...] = (),
        rcpts: tuple[str, ...] = ("<bob@example.net>",), ip: str = "127.0.0.1",
        refused: dict[str, tuple[str, str]] | None = None, auth: str = "",
        queue_id: str = "4ABCDEF") -> Outcome:
    """Drive one transaction the way libmilter does; return what the milter asked for."""
    Milter.factory = lambda: Session(deps)
    ctx = MilterTestCtx()
    ctx._setsymval("{auth_authen}", auth or None)
    assert ctx._connect(helo="client.example", ip=ip) == Milter.CONTINUE
    ctx._envfrom(sender, *mail_params)
    for r in rcpts:
        bad = (refused or {}).get(r)
        ctx._setsymval("{rcpt_mailer}", "error" if bad else "smtp")
        ctx._setsymval("{rcpt_host}", bad[0] if bad else "mx.example.net")
        ctx._setsymval("{rcpt_addr}", bad[1] if bad else r.strip("<>"))
        ctx._envrcpt(r)
    head, _, body = raw.partition(b"\r\n\r\n")
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    ctx._msg = msg
    for name, value in msg.items():
        ctx._header(name, value)
    ctx._eoh()
    ctx._feed_body(BytesIO(body))
    ctx._setsymval("i", queue_id)
    rc = ctx._eom()
    assert rc == Milter.CONTINUE
    new_body = ctx._body.getvalue() if ctx._bodyreplaced else body
    headers = {k: str(v) for k, v in ctx._msg.items()}
    ctx._close()
    return Outcome(ctx, new_body, ctx._bodyreplaced, headers)


def test_outgoing_html_rewritten_and_recorded(sink: ListSink) -> None:
    out = run(make_deps(sink), HTML_MSG)
    assert out.replaced
    assert b"https://example.com/a" not in out.body
    assert b"mailto:x@example.com" in out.body
    assert f"{BASE}/o/".encode() in out.body  # pixel
    [ev] = sink.events
    assert ev.direction is Direction.OUTGOING and ev.end is EndReason.QUEUED
    assert ev.queue_id == "4ABCDEF" and ev.message_id == "m1@example.com"
    assert ev.rewritten and ev.pixel and ev.tracking_header
    assert [(link.index, link.url) for link in ev.links] == [(1, "https://example.com/a?x=1&y=2")]
    assert out.headers["X-Trackmilter-ID"] == ev.tracking_id
    # the link in the new body verifies and carries the decoded URL
    start = out.body.index(f"{BASE}/c/".encode()) + len(BASE) + 3
    token = out.body[start:out.body.index(b'"', start)].decode()
    data = SIGNER.verify(token)
    assert (data.kind, data.tracking_id, data.index, data.url) == (
        Kind.CLICK, ev.tracking_id, 1, "https://example.com/a?x=1&y=2")
    assert out.headers["List-Unsubscribe"] == "<https://example.com/unsub>"


def test_refused_recipient_recorded_with_code(sink: ListSink) -> None:
    run(make_deps(sink), HTML_MSG, rcpts=("<bob@example.net>", "<no@example.net>"),
        refused={"<no@example.net>": ("5.7.1", "Recipient refused by policy")})
    [ev] = sink.events
    by_addr = {r.address: r for r in ev.recipients}
    assert by_addr["bob@example.net"].outcome is RcptOutcome.ACCEPTED
    no = by_addr["no@example.net"]
    assert (no.outcome, no.status, no.text) == (RcptOutcome.REFUSED, "5.7.1",
                                                "Recipient refused by policy")


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        pytest.param({"ip": "192.0.2.7"}, "inbound", id="inbound"),
        pytest.param({"sender": "<>"}, "null_sender", id="null-sender"),
    ],
)
def test_never_modified(sink: ListSink, kw: dict[str, Any], reason: str) -> None:
    out = run(make_deps(sink), HTML_MSG, **kw)
    assert not out.replaced and "X-Trackmilter-ID" not in out.headers
    [ev] = sink.events
    assert ev.skip_reason == reason and not ev.rewritten and not ev.links


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        pytest.param(b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; b=x\r\n",
                     "dkim_signed", id="dkim"),
        pytest.param(b"X-Trackmilter-Opt-Out: yes\r\n", "opt_out_header", id="opt-out"),
    ],
)
def test_never_modified_by_header(sink: ListSink, extra: bytes, reason: str) -> None:
    out = run(make_deps(sink), extra + HTML_MSG)
    assert not out.replaced and "X-Trackmilter-ID" not in out.headers
    assert sink.events[0].skip_reason == reason


def test_sasl_client_is_outgoing(sink: ListSink) -> None:
    out = run(make_deps(sink), HTML_MSG, ip="192.0.2.7", auth="alice")
    assert out.replaced and sink.events[0].auth_user == "alice"


def test_no_base_url_records_and_adds_header_only(sink: ListSink) -> None:
    out = run(make_deps(sink, base_url=""), HTML_MSG)
    assert not out.replaced and "X-Trackmilter-ID" in out.headers
    assert sink.events[0].skip_reason == "disabled"


def test_read_receipt_header_optional(sink: ListSink) -> None:
    out = run(make_deps(sink, read_receipts=True), HTML_MSG)
    assert out.headers["Disposition-Notification-To"] == "<alice@example.com>"
    out = run(make_deps(sink), HTML_MSG)
    assert "Disposition-Notification-To" not in out.headers


def test_internal_error_passes_message_unmodified(sink: ListSink,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import trackmilter.mta.session as session_mod

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(session_mod, "rewrite_message", boom)
    deps = make_deps(sink)
    out = run(deps, HTML_MSG)
    assert not out.replaced and "X-Trackmilter-ID" not in out.headers
    assert sink.events[0].skip_reason == "error"
    assert deps.metrics.registry.get_sample_value(
        "trackmilter_errors_total", {"stage": "rewrite"}) == 1


def test_callback_exception_boundary(sink: ListSink, monkeypatch: pytest.MonkeyPatch) -> None:
    deps = make_deps(sink)
    monkeypatch.setattr(Session, "getsymval", lambda self, name: 1 / 0)
    out = run(deps, HTML_MSG)
    assert not out.replaced
    assert deps.metrics.registry.get_sample_value(
        "trackmilter_errors_total", {"stage": "envfrom"}) == 1


def test_all_recipients_refused_is_recorded(sink: ListSink) -> None:
    Milter.factory = lambda: Session(make_deps(sink))
    ctx = MilterTestCtx()
    ctx._connect(ip="127.0.0.1")
    ctx._envfrom("<alice@example.com>")
    ctx._setsymval("{rcpt_mailer}", "error")
    ctx._setsymval("{rcpt_host}", "5.1.1")
    ctx._setsymval("{rcpt_addr}", "User unknown")
    ctx._envrcpt("<gone@example.net>")
    ctx._abort()
    ctx._close()
    [ev] = sink.events
    assert ev.end is EndReason.ALL_REFUSED
    assert ev.recipients[0].status == "5.1.1"


def test_metrics_counted(sink: ListSink) -> None:
    deps = make_deps(sink)
    run(deps, HTML_MSG)
    get = deps.metrics.registry.get_sample_value
    assert get("trackmilter_milter_messages_total",
               {"direction": "outgoing", "action": "rewritten"}) == 1
    assert get("trackmilter_milter_links_rewritten_total") == 1
    assert get("trackmilter_milter_recipients_total",
               {"outcome": "accepted", "enhanced_code": ""}) == 1
    assert get("trackmilter_milter_callback_duration_seconds_count", {"callback": "eom"}) == 1



def test_unsignable_link_left_exactly_as_written(sink: ListSink) -> None:
    raw = HTML_MSG.replace(b'<a href="mailto:x@example.com">',
                           b'<a href="http:///no-host?a=1&amp;b=2">')
    out = run(make_deps(sink), raw)
    assert out.replaced
    # declined link: byte-identical (entity kept, not double-escaped), not recorded as a link
    assert b'<a href="http:///no-host?a=1&amp;b=2">' in out.body
    assert [link.url for link in sink.events[0].links] == ["https://example.com/a?x=1&y=2"]


BOUNCE = (
    b"From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Undelivered Mail Returned to Sender\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/report; report-type=delivery-status;\r\n"
    b'\tboundary="B"\r\n'
    b"\r\n"
    b"--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n"
    b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
    b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
    b"Final-Recipient: rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
    b"--B--\r\n"
)


def test_verp_bounce_address_names_the_original_envelope(sink: ListSink) -> None:
    from dataclasses import replace

    from trackmilter.config import MilterSettings

    seen: list[bytes] = []
    deps = _queue(sink, seen, make_deps(sink))
    deps = replace(deps, settings=replace(deps.settings, milter=MilterSettings(
        verp_delimiters="+=")))
    run(deps, BOUNCE, sender="<>", ip="192.0.2.7",
        rcpts=("<alice+bob=example.net@example.com>",))
    assert deps.reports is not None
    deps.reports.close()
    report = sink.events[1]
    assert (report.verp_sender, report.verp_recipient) == ("alice@example.com",
                                                           "bob@example.net")


def _queue(sink: ListSink, seen: list[bytes], deps: Deps) -> Deps:
    from dataclasses import replace

    from trackmilter.model import ReportReceived, ReportRecipient
    from trackmilter.mta.report_queue import ReportQueue

    def decode(raw: bytes) -> ReportReceived | None:
        seen.append(raw)
        if b"delivery-status" not in raw:
            return None
        return ReportReceived("dsn", deps.clock(), (ReportRecipient("bob@example.net", "failed",
                                                                     "5.1.1"),))

    return replace(deps, reports=ReportQueue(decode, sink, deps.metrics, deps.log))


def test_bounce_is_decoded_off_the_callback_and_passes_unchanged(sink: ListSink) -> None:
    seen: list[bytes] = []
    deps = _queue(sink, seen, make_deps(sink))
    out = run(deps, BOUNCE, sender="<>", ip="192.0.2.7", queue_id="4BOUNCE")
    assert deps.reports is not None
    deps.reports.close()
    assert not out.replaced and "X-Trackmilter-ID" not in out.headers
    # The decoder got the message as received: headers (folding kept) and the body.
    [raw] = seen
    assert b"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary" in raw
    assert raw.endswith(BOUNCE.partition(b"\r\n\r\n")[2])
    message, report = sink.events
    assert message.kind == "message"
    assert report.kind == "report" and report.report_queue_id == "4BOUNCE"
    assert report.mta == deps.settings.milter.mta_name
    assert deps.metrics.registry.get_sample_value(
        "trackmilter_reports_recipients_total",
        {"kind": "dsn", "action": "failed", "reason": "none"}) == 1


def test_ordinary_inbound_mail_is_not_offered_to_the_decoder(sink: ListSink) -> None:
    seen: list[bytes] = []
    deps = _queue(sink, seen, make_deps(sink))
    run(deps, HTML_MSG, ip="192.0.2.7")
    assert deps.reports is not None
    deps.reports.close()
    assert seen == [] and [e.kind for e in sink.events] == ["message"]


def test_client_envid_is_recorded(sink: ListSink) -> None:
    run(make_deps(sink), HTML_MSG, mail_params=("RET=HDRS", "ENVID=batch+2D7"))
    assert sink.events[0].envelope_id == "batch-7"


def test_report_queue_is_bounded_by_bytes_and_counts_what_it_drops(sink: ListSink) -> None:
    import threading
    from datetime import UTC, datetime

    from trackmilter.mta.report_queue import ReportQueue

    deps = make_deps(sink)
    gate = threading.Event()
    decoded: list[int] = []

    def slow(raw: bytes) -> None:
        gate.wait(10)
        decoded.append(len(raw))
        return None

    q = ReportQueue(slow, sink, deps.metrics, deps.log, max_bytes=2500)
    at = datetime(2026, 11, 27, tzinfo=UTC)
    for _ in range(4):  # 1000 bytes each: the worker holds one, the queue two more
        q.submit(b"x" * 1000, queue_id="Q", message_id="", at=at, mta="m")
    skipped = deps.metrics.registry.get_sample_value(
        "trackmilter_reports_skipped_total", {"reason": "queue_full"})
    assert skipped == 2
    gate.set()
    q.close()
    assert decoded == [1000, 1000]


def test_recorded_headers_reach_the_event(sink: ListSink) -> None:
    msg = HTML_MSG.replace(b"Subject:", b"X-Campaign: spring-2026\r\nSubject:", 1)
    assert msg != HTML_MSG
    run(make_deps(sink), msg)
    (event,) = [e for e in sink.events if e.kind == "message"]
    assert event.headers == (("x-campaign", "spring-2026"),)
