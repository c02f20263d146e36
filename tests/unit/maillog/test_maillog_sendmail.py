"""Sendmail lines (hand-written in Sendmail 8.x shapes, see data/README.md) → records."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackmilter.maillog import (
    BounceNotice,
    Delivery,
    DeliveryStatus,
    LineParser,
    LogRecord,
    MessageQueued,
    Rejection,
)
from trackmilter.maillog.records import Flavor

LINES = (Path(__file__).parent / "data" / "sendmail.log").read_text().splitlines()
REF = datetime(2026, 11, 28, 12, tzinfo=UTC)
QID = "4AQN75Xk004711"


def at(day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=UTC)


EXPECTED: list[LogRecord | None] = [
    MessageQueued(at(26, 23, 7, 5), "mx", "sm-mta", QID, "alice@example.org", 1234, 2, "20261126230705.ABC@example.org"),
    Delivery(at(26, 23, 7, 6), "mx", "sm-mta", QID, ("bob@example.net", "carol@example.net"), None, "mx.example.net. [203.0.113.5]", 1.0, None, "2.0.0", DeliveryStatus.SENT, "Sent (OK id=1vX2a3-0004Bc-7Z, queued (fast))"),
    Delivery(at(26, 23, 7, 7), "mx", "sm-mta", QID, ("dave@example.com",), None, "mx.example.com. [198.51.100.7]", 2.0, None, "4.0.0", DeliveryStatus.DEFERRED, "Deferred: Connection refused by mx.example.com."),
    Delivery(at(28, 1, 7, 7), "mx", "sm-mta", QID, ("erin@example.com",), None, "mx.example.com. [198.51.100.7]", 2 * 86400 + 7202.0, None, "5.1.1", DeliveryStatus.BOUNCED, "User unknown"),
    BounceNotice(at(28, 1, 7, 7), "mx", "sm-mta", QID, "4AS17Xk004720", "DSN: User unknown"),
    Rejection(at(26, 23, 8, 0), "mx", "sm-mta", None, "check_rcpt", "client.example [192.0.2.9]", "550", "5.7.1", "<x@elsewhere.example>... Relaying denied", None, "x@elsewhere.example"),
    Rejection(at(26, 23, 8, 1), "mx", "sm-mta", "4AQN81Xk004731", "check_mail", "client.example [192.0.2.9]", "553", "5.1.8", "<spam@bad.example>... Domain of sender address spam@bad.example does not exist", "spam@bad.example", None),
    None,  # stat=queued: not a delivery attempt
    Delivery(at(26, 23, 8, 3), "mx", "sm-mta", "4AQN83Xk004733", ("gina@example.net",), None, "", 0.0, None, "2.0.0", DeliveryStatus.SENT, "Sent"),
    None,  # STARTTLS
    MessageQueued(at(26, 23, 8, 5), "mx", "sendmail", "4AQN85Xk004735", "alice", 12, 1, "x@mx"),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), list(zip(LINES, EXPECTED, strict=True)))
def test_sendmail_line(line: str, expected: LogRecord | None) -> None:
    assert LineParser("sendmail", reference=REF).parse(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(LINES[1], id="sendmail-line-postfix-flavor"),
        pytest.param(
            "Nov 27 00:00:23 lab postfix/qmgr[1]: ABC: removed", id="postfix-line-is-not-sendmail"
        ),
    ],
)
def test_flavor_selects_the_programs(line: str) -> None:
    flavor: Flavor = "postfix" if "sm-mta" in line else "sendmail"
    assert LineParser(flavor, reference=REF).parse(line) is None


@pytest.mark.parametrize(
    "message",
    [
        "Q1: to=<a@b>, delay=00:00:01, stat=Sent",  # no dsn: the stat word decides
        "Q1: to=<a@b>, delay=bogus, dsn=2.0.0, stat=Sent",
        "Q1: to=<a@b>, delay=x+00:00:01, dsn=2.0.0, stat=Sent",
    ],
)
def test_sendmail_tolerates_missing_or_odd_fields(message: str) -> None:
    record = LineParser("sendmail", reference=REF).parse(f"Nov 26 23:07:05 mx sm-mta[1]: {message}")
    assert isinstance(record, Delivery)
    assert record.status is DeliveryStatus.SENT


@pytest.mark.parametrize(
    "message",
    [
        "Q1: to=<a@b>, delay=00:00:01",  # no stat=
        "Q1: from=<a@b>, size=x, nrcpts=1",
        "ruleset=check_rcpt, arg1=<a@b>",  # no reject=
        "Q1: Q2: something else",
        "Q1: ruleset=check_relay, relay=x, reject=no code here",
        "no queue id here",
    ],
)
def test_sendmail_lines_without_outcome(message: str) -> None:
    record = LineParser("sendmail", reference=REF).parse(f"Nov 26 23:07:05 mx sm-mta[1]: {message}")
    assert record is None or isinstance(record, Rejection)


def test_no_prefix_of_a_sendmail_line_raises() -> None:
    parser = LineParser("sendmail", reference=REF)
    for line in LINES:
        for end in range(len(line)):
            parser.parse(line[:end])
