"""`LineParser.scan` over a block gives exactly what `parse` gives line by line."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

import pytest

from trackmilter.maillog import (
    OUTCOMES,
    BounceNotice,
    Delivery,
    LineParser,
    MessageExpired,
    MessageId,
    MessageQueued,
    Rejection,
)
from trackmilter.maillog.records import Flavor, RecordType

DATA = Path(__file__).parent / "data"
REF = datetime(2026, 11, 28, 12, tzinfo=UTC)
FILES: list[tuple[str, Flavor]] = [
    ("postfix-3.7-lab.log", "postfix"),
    ("postfix-3.7-pickup.log", "postfix"),
    ("postfix-3.7-milter.log", "postfix"),
    ("rsyslog-rfc3339.log", "postfix"),
    ("sendmail.log", "sendmail"),
]


ALL_BUT_REMOVED = {
    BounceNotice, Delivery, MessageExpired, MessageId, MessageQueued, Rejection,
}  # fmt: skip


@pytest.mark.parametrize(("name", "flavor"), FILES)
@pytest.mark.parametrize(
    "kinds",
    [None, OUTCOMES, {MessageId}, ALL_BUT_REMOVED],
    ids=["all", "outcomes", "ids", "all-but-removed"],
)
def test_scan_equals_parse_per_line(
    name: str, flavor: Flavor, kinds: Collection[RecordType] | None
) -> None:
    text = (DATA / name).read_text()
    parser = LineParser(flavor, reference=REF, kinds=kinds)
    by_line = [r for r in map(parser.parse, text.splitlines()) if r is not None]
    assert list(parser.scan(text)) == by_line
    assert list(parser.scan(text.replace("\n", "\r\n"))) == by_line
    assert list(parser.scan(text.rstrip("\n"))) == by_line
    if kinds is not None:
        assert {type(r) for r in by_line} <= set(kinds)


def test_outcomes_are_what_a_status_view_needs() -> None:
    assert OUTCOMES == {Delivery, Rejection, MessageExpired}


def test_scan_of_text_without_outcomes() -> None:
    parser = LineParser(reference=REF)
    assert list(parser.scan("")) == []
    assert (
        list(parser.scan("Nov 27 00:00:23 lab postfix/smtpd[1]: connect from x[1.2.3.4]\n")) == []
    )


def test_only_newline_ends_a_line() -> None:
    """Form feeds and Unicode line separators are text in a reply, not line breaks."""
    line = (
        "Nov 27 00:00:23 lab postfix/smtp[1]: ABC: to=<a@b.example>, relay=x, delay=1, "
        "delays=0/0/0/1, dsn=5.0.0, status=bounced (550 a\x0cb\u2028c)\n"
    )
    parser = LineParser(reference=REF)
    (record,) = parser.scan(line)
    assert record == parser.parse(line)
    assert isinstance(record, Delivery)
    assert record.reply == "550 a\x0cb\u2028c"


@pytest.mark.parametrize(("name", "flavor"), FILES)
def test_scan_of_a_block_cut_anywhere_does_not_raise(name: str, flavor: Flavor) -> None:
    text = (DATA / name).read_text()
    for kinds in (None, OUTCOMES):
        parser = LineParser(flavor, reference=REF, kinds=kinds)
        for cut in range(0, len(text), 263):
            for record in parser.scan(text[:cut]):
                assert type(record) in parser.kinds


def test_a_line_with_two_triggers_gives_one_record() -> None:
    line = (
        "Nov 27 00:00:23 lab postfix/smtp[1]: ABC: to=<a@b.example>, relay=x, delay=1, "
        "delays=0/0/0/1, dsn=5.0.0, status=bounced (550 reject: to=<a@b.example> said: to=<)\n"
    )
    parser = LineParser(reference=REF, kinds=OUTCOMES)
    assert list(parser.scan(line * 2)) == [parser.parse(line)] * 2
