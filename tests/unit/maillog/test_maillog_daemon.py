"""The follower's core: real Postfix log lines in, per-recipient events out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry

from trackmilter.maillog.daemon import KINDS, Tracker, consume
from trackmilter.maillog.parse import LineParser
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, DeliveryStatus, Event

DATA = Path(__file__).parent / "data"
REFERENCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class ListSink:
    def __init__(self) -> None:
        self.events: list[DeliveryObserved] = []

    def submit(self, event: Event) -> None:
        assert isinstance(event, DeliveryObserved)
        self.events.append(event)


def run(text: str) -> tuple[list[DeliveryObserved], Metrics]:
    sink, metrics = ListSink(), Metrics(CollectorRegistry())
    consume(text, LineParser("postfix", reference=REFERENCE, kinds=KINDS), Tracker("lab"),
            sink, metrics)
    return sink.events, metrics


def by_rcpt(events: list[DeliveryObserved], queue_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ev in events:
        if ev.queue_id == queue_id:
            out.setdefault(ev.recipient, []).append(str(ev.status))
    return out


def test_lab_log_outcomes_per_recipient() -> None:
    events, metrics = run((DATA / "postfix-3.7-lab.log").read_text())
    seq = by_rcpt(events, "4633B20E19D")
    assert seq["ok1@example.net"] == ["sent"]
    assert seq["reject1@example.net"] == ["bounced"]
    # Deferred on every retry, then the message expired: expired is derived per recipient.
    assert seq["defer1@example.net"][0] == "deferred"
    assert seq["defer1@example.net"][-1] == "expired"
    [bounced] = [e for e in events if e.recipient == "reject1@example.net"]
    assert bounced.dsn == "5.1.1" and bounced.mta == "lab"
    assert bounced.text.endswith("(in reply to RCPT TO command)")
    assert bounced.relay == "127.0.0.1[127.0.0.1]:45345"
    lines = metrics.registry.get_sample_value("trackmilter_maillog_lines_total")
    assert lines == len((DATA / "postfix-3.7-lab.log").read_text().splitlines())
    sent = metrics.registry.get_sample_value("trackmilter_maillog_deliveries_total",
                                             {"status": "sent"})
    assert sent == sum(1 for e in events if e.status is DeliveryStatus.SENT) > 0


def test_expired_uses_the_last_deferral_as_evidence() -> None:
    events, _ = run((DATA / "postfix-3.7-lab.log").read_text())
    [expired] = [e for e in events
                 if e.queue_id == "4C8BA20E1A1" and e.status is DeliveryStatus.EXPIRED]
    assert expired.recipient == "y@dead.test" and expired.dsn == "4.4.1"
    assert "Connection refused" in expired.text
    assert expired.at.strftime("%H:%M:%S") == "00:00:38"


def _line(qid: str, to: str, relay: str, status: str, reply: str) -> str:
    return (f"Nov 27 10:00:00 mx postfix/smtp[1]: {qid}: to=<{to}>, relay={relay}, delay=1, "
            f"delays=0/0/0/1, dsn=2.0.0, status={status} ({reply})\n")


def test_content_filter_reinjection_is_chained_to_the_original_queue_id() -> None:
    text = (
        _line("AAA111", "bob@example.net", "127.0.0.1[127.0.0.1]:10024", "sent",
              "250 2.0.0 Ok: queued as BBB222")
        + _line("BBB222", "bob@example.net", "127.0.0.1[127.0.0.1]:10025", "sent",
                "250 2.0.0 Ok: queued as CCC333")
        + _line("CCC333", "bob@example.net", "mx.example.net[192.0.2.9]:25", "sent",
                "250 2.0.0 Ok: queued as REMOTE9")
        + _line("REMOTE9", "x@example.net", "mx.example.net[192.0.2.9]:25", "sent", "250 ok")
    )
    events, _ = run(text)
    assert [e.queue_id for e in events] == ["AAA111", "AAA111", "AAA111", "REMOTE9"]
    assert events[2].relay.startswith("mx.example.net")


def test_lines_the_parser_does_not_know_are_counted_not_fatal() -> None:
    broken = "Nov 27 10:00:00 mx postfix/smtp[1]: 4ABC: to=<a@b>, status=sent (250 ok\n"
    good = _line("AAA111", "bob@example.net", "mx[192.0.2.9]:25", "sent", "250 ok")
    events, metrics = run("garbage\n\x00\nNov 27 10:00:00 mx postfix/smtpd[1]: connect from x\n"
                          + broken.replace("to=<a@b>, ", "") + good)
    assert [e.queue_id for e in events] == ["AAA111"]
    assert metrics.registry.get_sample_value("trackmilter_maillog_lines_total") == 5
    # The outcome line without to= is malformed: counted apart; the others are just noise.
    assert metrics.registry.get_sample_value("trackmilter_maillog_unparsed_lines_total") == 1
