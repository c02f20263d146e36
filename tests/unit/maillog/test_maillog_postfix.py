"""Postfix lines captured from a real Postfix 3.7 (see data/README.md) → records."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from trackmilter.maillog import (
    BounceNotice,
    Delivery,
    DeliveryStatus,
    LineParser,
    LogRecord,
    MessageExpired,
    MessageId,
    MessageQueued,
    MessageRemoved,
    Rejection,
    parse_line,
)

DATA = Path(__file__).parent / "data"
REF = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
T = datetime(2026, 11, 27, 0, 0, 23, tzinfo=UTC)
M = datetime(2026, 11, 27, 0, 18, 44, tzinfo=UTC)
H = "Nov 27 00:00:23 lab "
SMTP = "postfix/smtp"
RELAY = "127.0.0.1[127.0.0.1]:45345"


def parse(line: str) -> LogRecord | None:
    return parse_line(line, reference=REF)


CASES = [
    pytest.param(
        H + "postfix/smtp[6915]: 5537920E1AC: to=<f@filter.test>, relay=127.0.0.1[127.0.0.1]:36475, delay=0.08, delays=0/0.02/0.05/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 688CC20E1A0)",
        Delivery(T, "lab", SMTP, "5537920E1AC", ("f@filter.test",), None, "127.0.0.1[127.0.0.1]:36475", 0.08, "0/0.02/0.05/0.01", "2.0.0", DeliveryStatus.SENT, "250 2.0.0 Ok: queued as 688CC20E1A0"),
        id="sent-content-filter",
    ),
    pytest.param(
        H + "postfix/smtp[6911]: 4633B20E19D: to=<defer1@example.net>, relay=127.0.0.1[127.0.0.1]:45345, delay=0.09, delays=0.02/0.03/0/0.04, dsn=4.7.1, status=deferred (host 127.0.0.1[127.0.0.1] said: 450 4.7.1 <defer1@example.net>: Greylisted (try again later, in 1s), see https://g.example/?a=1,2 (in reply to RCPT TO command))",
        Delivery(T, "lab", SMTP, "4633B20E19D", ("defer1@example.net",), None, RELAY, 0.09, "0.02/0.03/0/0.04", "4.7.1", DeliveryStatus.DEFERRED, "host 127.0.0.1[127.0.0.1] said: 450 4.7.1 <defer1@example.net>: Greylisted (try again later, in 1s), see https://g.example/?a=1,2 (in reply to RCPT TO command)"),
        id="deferred-parens-and-commas",
    ),
    pytest.param(
        H + "postfix/smtp[6911]: 4633B20E19D: to=<reject1@example.net>, relay=127.0.0.1[127.0.0.1]:45345, delay=0.13, delays=0.02/0.03/0/0.08, dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <reject1@example.net>: Recipient address rejected: User unknown (in virtual table, see: https://x.example/(a,b)) (in reply to RCPT TO command))",
        Delivery(T, "lab", SMTP, "4633B20E19D", ("reject1@example.net",), None, RELAY, 0.13, "0.02/0.03/0/0.08", "5.1.1", DeliveryStatus.BOUNCED, "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <reject1@example.net>: Recipient address rejected: User unknown (in virtual table, see: https://x.example/(a,b)) (in reply to RCPT TO command)"),
        id="bounced-nested-parens",
    ),
    pytest.param(
        H + "postfix/smtp[6921]: 6425720E1B5: to=<s@example.org>, relay=127.0.0.1[127.0.0.1]:45345, conn_use=2, delay=0.02, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 2DE6E36096)",
        Delivery(T, "lab", SMTP, "6425720E1B5", ("s@example.org",), None, RELAY, 0.02, "0.01/0.01/0/0", "2.0.0", DeliveryStatus.SENT, "250 2.0.0 Ok: queued as 2DE6E36096"),
        id="conn-use",
    ),
    pytest.param(
        "Nov 27 00:01:19 lab postfix/error[7549]: 31E3220E2B9: to=<other@err.test>, orig_to=<alias@example.net>, relay=none, delay=0.05, delays=0.03/0.01/0/0.01, dsn=5.1.1, status=bounced (this domain is gone (closed, 2024))",
        Delivery(T + timedelta(seconds=56), "lab", "postfix/error", "31E3220E2B9", ("other@err.test",), "alias@example.net", "none", 0.05, "0.03/0.01/0/0.01", "5.1.1", DeliveryStatus.BOUNCED, "this domain is gone (closed, 2024)"),
        id="error-orig-to",
    ),
    pytest.param(
        H + "postfix/local[6913]: 49DF320E19F: to=<alice@local.test>, relay=local, delay=0.1, delays=0/0.04/0/0.06, dsn=5.1.1, status=bounced (unknown user: \"alice\")",
        Delivery(T, "lab", "postfix/local", "49DF320E19F", ("alice@local.test",), None, "local", 0.1, "0/0.04/0/0.06", "5.1.1", DeliveryStatus.BOUNCED, 'unknown user: "alice"'),
        id="local-bounced",
    ),
    pytest.param(
        H + "postfix/virtual[6914]: 4B14720E1A0: to=<carol@virt.test>, relay=virtual, delay=0.04, delays=0/0.03/0/0, dsn=2.0.0, status=sent (delivered to maildir)",
        Delivery(T, "lab", "postfix/virtual", "4B14720E1A0", ("carol@virt.test",), None, "virtual", 0.04, "0/0.03/0/0", "2.0.0", DeliveryStatus.SENT, "delivered to maildir"),
        id="virtual-sent",
    ),
    pytest.param(
        H + "postfix/smtp[6915]: 4C8BA20E1A1: to=<y@dead.test>, relay=none, delay=0.06, delays=0.02/0.03/0/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:40141: Connection refused)",
        Delivery(T, "lab", SMTP, "4C8BA20E1A1", ("y@dead.test",), None, "none", 0.06, "0.02/0.03/0/0", "4.4.1", DeliveryStatus.DEFERRED, "connect to 127.0.0.1[127.0.0.1]:40141: Connection refused"),
        id="deferred-connect-refused",
    ),
    pytest.param(
        H + "postfix/qmgr[6906]: 4633B20E19D: from=<s@example.org>, size=307, nrcpt=3 (queue active)",
        MessageQueued(T, "lab", "postfix/qmgr", "4633B20E19D", "s@example.org", 307, 3),
        id="qmgr-from",
    ),
    pytest.param(
        H + "postfix/qmgr[6906]: 6425720E1B5: from=<>, size=2465, nrcpt=1 (queue active)",
        MessageQueued(T, "lab", "postfix/qmgr", "6425720E1B5", "", 2465, 1),
        id="qmgr-null-sender",
    ),
    pytest.param(
        H + "postfix/qmgr[6906]: 4B14720E1A0: removed",
        MessageRemoved(T, "lab", "postfix/qmgr", "4B14720E1A0"),
        id="qmgr-removed",
    ),
    pytest.param(
        "Nov 27 00:00:38 lab postfix/qmgr[6906]: 4633B20E19D: from=<s@example.org>, status=expired, returned to sender",
        MessageExpired(T + timedelta(seconds=15), "lab", "postfix/qmgr", "4633B20E19D", "s@example.org"),
        id="qmgr-expired",
    ),
    pytest.param(
        H + "postfix/cleanup[6910]: 4633B20E19D: message-id=<1795737623242448589@example.org>",
        MessageId(T, "lab", "postfix/cleanup", "4633B20E19D", "1795737623242448589@example.org"),
        id="cleanup-message-id",
    ),
    pytest.param(
        H + "postfix/smtpd[6908]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <refused@example.net>: Recipient address rejected: Recipient refused by policy; from=<s@example.org> to=<refused@example.net> proto=ESMTP helo=<[127.0.0.1]>",
        Rejection(T, "lab", "postfix/smtpd", None, "RCPT", "localhost[127.0.0.1]", "554", "5.7.1", "<refused@example.net>: Recipient address rejected: Recipient refused by policy", "s@example.org", "refused@example.net"),
        id="noqueue-reject",
    ),
    pytest.param(
        H + "postfix/smtpd[6908]: 4B14720E1A0: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 <dave@virt.test>: Recipient address rejected: User unknown in virtual mailbox table; from=<s@example.org> to=<dave@virt.test> proto=ESMTP helo=<[127.0.0.1]>",
        Rejection(T, "lab", "postfix/smtpd", "4B14720E1A0", "RCPT", "localhost[127.0.0.1]", "550", "5.1.1", "<dave@virt.test>: Recipient address rejected: User unknown in virtual mailbox table", "s@example.org", "dave@virt.test"),
        id="reject-with-queue-id",
    ),
    pytest.param(
        H + "postfix/smtpd[6908]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 <x@err.test>: Recipient address rejected: this domain is gone (closed, 2024); from=<s@example.org> to=<x@err.test> proto=ESMTP helo=<[127.0.0.1]>",
        Rejection(T, "lab", "postfix/smtpd", None, "RCPT", "localhost[127.0.0.1]", "550", "5.1.1", "<x@err.test>: Recipient address rejected: this domain is gone (closed, 2024)", "s@example.org", "x@err.test"),
        id="reject-text-with-parens",
    ),
    pytest.param(
        "Nov 27 00:18:44 lab postfix/smtpd[15566]: NOQUEUE: milter-reject: RCPT from localhost[127.0.0.1]: 550 5.7.1 Recipient blocked by milter (policy; see x); from=<a@example.org> to=<milterrcpt@example.net> proto=ESMTP helo=<[127.0.0.1]>",
        Rejection(M, "lab", "postfix/smtpd", None, "RCPT", "localhost[127.0.0.1]", "550", "5.7.1", "Recipient blocked by milter (policy; see x)", "a@example.org", "milterrcpt@example.net"),
        id="milter-reject-rcpt",
    ),
    pytest.param(
        # At end of message Postfix logs the milter's enhanced code only.
        "Nov 27 00:18:44 lab postfix/cleanup[15568]: 2FF5320C67D: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Message looks like spam; score=9.5 (threshold 5); from=<spam@example.org> to=<ok2@example.net> proto=ESMTP helo=<[127.0.0.1]>",
        Rejection(M, "lab", "postfix/cleanup", "2FF5320C67D", "END-OF-MESSAGE", "localhost[127.0.0.1]", None, "5.7.1", "Message looks like spam; score=9.5 (threshold 5)", "spam@example.org", "ok2@example.net"),
        id="milter-reject-end-of-message",
    ),
    pytest.param(
        H + "postfix/bounce[6926]: 4633B20E19D: sender non-delivery notification: 6425720E1B5",
        BounceNotice(T, "lab", "postfix/bounce", "4633B20E19D", "6425720E1B5", "sender non-delivery notification"),
        id="bounce-notification",
    ),
    pytest.param(
        "2026-11-27T00:00:23.123456+00:00 mail postfix-out/smtp[6911]: 4633B20E19D: to=<ok1@example.net>, relay=127.0.0.1[127.0.0.1]:45345, delay=0.13, delays=0.02/0.03/0/0.08, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as C5651E94F1)",
        Delivery(T.replace(microsecond=123456), "mail", "postfix-out/smtp", "4633B20E19D", ("ok1@example.net",), None, RELAY, 0.13, "0.02/0.03/0/0.08", "2.0.0", DeliveryStatus.SENT, "250 2.0.0 Ok: queued as C5651E94F1"),
        id="rfc3339-syslog-name",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_postfix_line(line: str, expected: LogRecord) -> None:
    assert parse(line) == expected
    assert parse(line + "\n") == expected


IGNORED = [
    pytest.param(H + "postfix/smtpd[6908]: connect from localhost[127.0.0.1]", id="connect"),
    pytest.param(
        H
        + "postfix/smtpd[6908]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5",
        id="disconnect",
    ),
    pytest.param(H + "postfix/smtpd[6908]: 4633B20E19D: client=localhost[127.0.0.1]", id="client"),
    pytest.param(H + "postfix/pickup[7540]: 31E3220E2B9: uid=0 from=<s@example.org>", id="pickup"),
    pytest.param(
        H + 'postfix/local[6913]: warning: /tmp/aliases, line 1: record is in "key: value" format',
        id="warning",
    ),
    pytest.param(
        H
        + "postfix/smtp[1]: 4633B20E19D: to=<a@b>, relay=none, delay=0, delays=0/0/0/0, dsn=2.0.0, status=deliverable (delivers to x)",
        id="verify-probe",
    ),
    pytest.param(H + "postfix/master[6904]: daemon started -- version 3.7.11", id="master"),
    pytest.param(H + "kernel: [1.2] eth0 up", id="not-a-program"),
    pytest.param(H + "CRON[12]: 4633B20E19D: to=<a@b>, relay=x", id="other-program"),
    pytest.param("", id="empty"),
    pytest.param("Nov 27", id="stamp-only"),
    pytest.param("garbage line without structure", id="garbage"),
    pytest.param("Nov 99 00:00:23 lab postfix/qmgr[1]: ABC: removed", id="bad-day"),
    pytest.param("2026-13-45T00:00:00Z lab postfix/qmgr[1]: ABC: removed", id="bad-iso"),
    pytest.param(H + "postfix/qmgr[1]: ABC: from=<a>, size=x, nrcpt=1", id="bad-size"),
]


@pytest.mark.parametrize("line", IGNORED)
def test_line_without_outcome(line: str) -> None:
    assert parse(line) is None


def test_queued_as_chains_content_filter_reinjection() -> None:
    record = parse(str(CASES[0].values[0]))
    assert isinstance(record, Delivery)
    assert record.queued_as == "688CC20E1A0"


@pytest.mark.parametrize(
    ("reply", "status", "expected"),
    [
        ("250 2.0.0 Ok: queued as 688CC20E1A0", DeliveryStatus.SENT, "688CC20E1A0"),
        (
            "250 2.0.0 from MTA(smtp:[127.0.0.1]:10025): 250 2.0.0 Ok: queued as 3Tmqm62Xs8z1xR8",
            DeliveryStatus.SENT,
            "3Tmqm62Xs8z1xR8",
        ),
        ("250 2.0.0 OK 1700000000 gsmtp", DeliveryStatus.SENT, None),
        ("delivered to maildir", DeliveryStatus.SENT, None),
        ("451 queued as ABC", DeliveryStatus.DEFERRED, None),
    ],
)
def test_queued_as(reply: str, status: DeliveryStatus, expected: str | None) -> None:
    d = Delivery(T, "h", SMTP, "Q", ("a@b",), None, "r", 0.0, None, "2.0.0", status, reply)
    assert d.queued_as == expected


def test_truncated_reply_keeps_what_it_has() -> None:
    line = (
        H
        + "postfix/smtp[1]: ABC: to=<a@b>, relay=x, delay=1, delays=0/0/0/1, dsn=5.0.0, status=bounced (host x said: 550 cut"
    )
    record = parse(line)
    assert isinstance(record, Delivery)
    assert record.reply == "host x said: 550 cut"


@pytest.mark.parametrize(
    ("stamp", "reference", "expected"),
    [
        pytest.param("Nov 27 00:00:23", REF, datetime(2026, 11, 27, 0, 0, 23, tzinfo=UTC), id="same-year"),
        pytest.param("Dec 31 23:59:59", datetime(2027, 1, 2, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), id="previous-year"),
        pytest.param("Jan  1 00:00:05", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, 0, 0, 5, tzinfo=UTC), id="just-after-new-year"),
        pytest.param("Nov  6 10:00:00", REF, datetime(2026, 11, 6, 10, tzinfo=UTC), id="space-padded-day"),
        pytest.param("Feb 29 12:00:00", datetime(2026, 3, 1, tzinfo=UTC), datetime(2024, 2, 29, 12, tzinfo=UTC), id="leap-day"),
        pytest.param("Nov 27 00:00:23", datetime(2026, 11, 27, 1, tzinfo=timezone(timedelta(hours=1))), datetime(2026, 11, 27, 0, 0, 23, tzinfo=timezone(timedelta(hours=1))), id="reference-zone"),
    ],
)  # fmt: skip
def test_syslog_stamp_year_and_zone(stamp: str, reference: datetime, expected: datetime) -> None:
    record = parse_line(f"{stamp} lab postfix/qmgr[1]: ABC: removed", reference=reference)
    assert isinstance(record, MessageRemoved)
    assert record.time == expected
    assert record.time.tzinfo == expected.tzinfo


def test_clock_is_read_only_for_a_new_stamp() -> None:
    calls: list[datetime] = []

    def clock() -> datetime:
        calls.append(REF)
        return REF

    parser = LineParser(clock=clock)
    for _ in range(3):
        assert parser.parse(H + "postfix/qmgr[1]: ABC: removed") is not None
    assert len(calls) == 1


def test_unknown_flavor_is_refused() -> None:
    with pytest.raises(ValueError, match="flavor 'exim'"):
        LineParser("exim")  # type: ignore[arg-type]


EXPECTED_COUNTS = {
    "postfix-3.7-lab.log": {
        "Delivery": 96, "MessageQueued": 92, "MessageId": 62, "MessageRemoved": 62,
        "BounceNotice": 5, "Rejection": 4, "MessageExpired": 2,
    },
    "postfix-3.7-pickup.log": {
        "Delivery": 8, "MessageQueued": 5, "MessageId": 2, "MessageRemoved": 1, "BounceNotice": 1,
    },
    "postfix-3.7-milter.log": {
        "Delivery": 1, "MessageQueued": 1, "MessageId": 2, "MessageRemoved": 1, "Rejection": 2,
    },
    "rsyslog-rfc3339.log": {
        "Delivery": 4, "MessageQueued": 2, "MessageId": 2, "MessageRemoved": 1,
        "BounceNotice": 1, "Rejection": 1,
    },
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_whole_captured_log(name: str) -> None:
    """Every outcome line of a real log is understood: counts match what grep finds."""
    text = (DATA / name).read_text()
    parser = LineParser(reference=REF)
    counts = Counter(type(r).__name__ for r in map(parser.parse, text.splitlines()) if r)
    assert dict(counts) == EXPECTED_COUNTS[name]
    assert counts["Delivery"] == text.count(": to=<")
    assert counts["MessageId"] == text.count(": message-id=<")


def test_no_prefix_of_a_real_line_raises() -> None:
    """Lines cut anywhere (syslog truncation, a partial read) give a record or None."""
    lines = set()
    for name in EXPECTED_COUNTS:
        lines.update((DATA / name).read_text().splitlines())
    failures: list[tuple[str, Exception]] = []
    parser = LineParser(reference=REF, on_error=lambda line, exc: failures.append((line, exc)))
    for line in lines:
        for end in range(len(line)):
            parser.parse(line[:end])
    assert failures == []


def test_content_filter_chain_leads_back_to_the_original_queue_id() -> None:
    """The lab's filter re-injects until cleanup's hop limit: every hop chains back."""
    parser = LineParser(reference=REF)
    records = list(parser.scan((DATA / "postfix-3.7-lab.log").read_text()))
    local_ids = {r.queue_id for r in records if isinstance(r, MessageQueued)}
    previous = {
        r.queued_as: r.queue_id
        for r in records
        if isinstance(r, Delivery) and r.queued_as in local_ids
    }
    last = next(
        r
        for r in reversed(records)
        if isinstance(r, Delivery) and r.recipients == ("f@filter.test",)
    )
    assert last.status is DeliveryStatus.BOUNCED
    assert "too many hops" in last.reply
    qid, hops = last.queue_id, 0
    while qid in previous:
        qid, hops = previous[qid], hops + 1
    assert qid == "5537920E1AC"
    assert hops > 10


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        pytest.param("2026-11-27T00:00:23Z", T, id="zulu"),
        pytest.param("2026-11-27T01:00:23.5+01:00", T.replace(microsecond=500000), id="offset"),
        pytest.param("2026-11-27T00:00:23", T, id="no-offset-takes-reference-zone"),
    ],
)
def test_rfc3339_stamps(stamp: str, expected: datetime) -> None:
    record = parse(f"{stamp} mail postfix/qmgr[1]: ABC: removed")
    assert isinstance(record, MessageRemoved)
    assert record.time == expected
    assert record.time.utcoffset() is not None


def test_default_clock_gives_an_aware_local_time() -> None:
    record = parse_line(H + "postfix/qmgr[1]: ABC: removed")
    assert isinstance(record, MessageRemoved)
    assert record.time.utcoffset() is not None
    assert record.time <= datetime.now(UTC) + timedelta(days=1)


MALFORMED_DELAYS = [
    pytest.param("delay=1..2, delays=0/0/0/1", id="delay-two-dots"),
    pytest.param("delay=., delays=0/0/0/1", id="delay-dot"),
    pytest.param("delay=1., delays=0/0/0/1", id="delay-trailing-dot"),
    pytest.param("delay=1, delays=0/0/0/1..2", id="delays-two-dots"),
    pytest.param("delay=1, delays=0/0/0", id="delays-three-parts"),
    pytest.param("delay=1, delays=////", id="delays-slashes"),
]


@pytest.mark.parametrize("delays", MALFORMED_DELAYS)
def test_malformed_delay_is_no_record_not_an_exception(delays: str) -> None:
    """`delay=1..2` matched `[\\d.]+`, then float() raised: the follower died on that line
    for ever (a restart reads it again)."""
    line = H + f"postfix/smtp[1]: ABC: to=<a@b>, relay=x, {delays}, dsn=2.0.0, status=sent (250 ok)"
    failures: list[Exception] = []
    parser = LineParser(reference=REF, on_error=lambda _line, exc: failures.append(exc))
    assert parser.parse(line) is None
    assert list(parser.scan(line + "\n")) == []
    assert failures == []


def test_a_builder_exception_skips_the_line_and_is_reported() -> None:
    """Whatever a builder raises on (a bug, a shape the pattern lets through), the other
    lines of the block still give their records."""
    good = H + "postfix/qmgr[1]: GOOD: removed"
    bad = H + "postfix/qmgr[1]: BAD: removed"
    failures: list[tuple[str, Exception]] = []
    parser = LineParser(reference=REF, on_error=lambda line, exc: failures.append((line, exc)))
    build = parser._build

    def fragile(m: re.Match[str], time_of: Callable[[str], datetime | None]) -> LogRecord | None:
        if "BAD" in m.group(0):
            raise ValueError("boom")
        return build(m, time_of)

    parser._build = fragile
    records = list(parser.scan(f"{bad}\n{good}\n{bad}\n"))
    assert [r.queue_id for r in records if isinstance(r, MessageRemoved)] == ["GOOD"]
    assert [line for line, _ in failures] == [bad, bad]
    assert parser.parse(bad) is None


TRANSPORTS = [
    pytest.param("postfix/discard[6922]: 5641020E1A0: to=<d@discard.test>, relay=none, delay=0.04, delays=0.01/0.02/0/0, dsn=2.0.0, status=sent (silently dropped)", "discard", "none", id="discard"),
    pytest.param("postfix/pipe[6920]: 5330920E1A5: to=<p@pipe.test>, relay=mypipe, delay=0.04, delays=0.01/0.03/0/0.01, dsn=2.0.0, status=sent (delivered via mypipe service)", "pipe", "mypipe", id="pipe"),
    pytest.param("postfix/virtual[6914]: 4B14720E1A0: to=<carol@virt.test>, relay=virtual, delay=0.04, delays=0/0.03/0/0, dsn=2.0.0, status=sent (delivered to maildir)", "virtual", "virtual", id="virtual"),
    pytest.param("postfix/local[6913]: 49DF320E19F: to=<alice@local.test>, relay=local, delay=0.1, delays=0/0.04/0/0.06, dsn=2.0.0, status=sent (delivered to mailbox)", "local", "local", id="local"),
    pytest.param("postfix/error[7549]: 31E3220E2B9: to=<other@err.test>, relay=none, delay=0.05, delays=0.03/0.01/0/0.01, dsn=5.1.1, status=bounced (this domain is gone)", "error", "none", id="error"),
    pytest.param("postfix-out/smtp[1]: ABC: to=<a@b>, relay=mx[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)", "smtp", "mx[192.0.2.1]:25", id="syslog-name"),
    pytest.param("postfix/relay/smtp[1]: ABC: to=<a@b>, relay=mx[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)", "smtp", "mx[192.0.2.1]:25", id="service-name"),
]  # fmt: skip


@pytest.mark.parametrize(("message", "transport", "relay"), TRANSPORTS)
def test_transport_tells_our_own_mta_from_a_remote_server(
    message: str, transport: str, relay: str
) -> None:
    """relay=none is both the discard agent dropping mail and the error agent: the
    delivery agent says which, so a view need not call it "accepted by the remote server none"."""
    record = parse(H + message)
    assert isinstance(record, Delivery)
    assert (record.transport, record.relay) == (transport, relay)
