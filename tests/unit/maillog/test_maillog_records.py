"""Records built by `make` (the parser's fast path) are the same as ordinary ones."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from trackmilter.maillog import (
    BounceNotice,
    Delivery,
    DeliveryStatus,
    LogRecord,
    MessageExpired,
    MessageId,
    MessageQueued,
    MessageRemoved,
    Rejection,
)
from trackmilter.maillog.records import make

T = datetime(2026, 11, 27, tzinfo=UTC)

RECORDS: list[LogRecord] = [
    Delivery(T, "h", "postfix/smtp", "Q", ("a@b",), None, "r", 0.5, "0/0/0/0.5", "2.0.0", DeliveryStatus.SENT, "ok"),
    MessageQueued(T, "h", "postfix/qmgr", "Q", "s@x", 10, 1, None),
    MessageRemoved(T, "h", "postfix/qmgr", "Q"),
    MessageExpired(T, "h", "postfix/qmgr", "Q", "s@x"),
    MessageId(T, "h", "postfix/cleanup", "Q", "id@x"),
    Rejection(T, "h", "postfix/smtpd", None, "RCPT", "c[1.2.3.4]", "550", "5.1.1", "no", "s@x", "a@b"),
    BounceNotice(T, "h", "postfix/bounce", "Q", "N", "sender non-delivery notification"),
]  # fmt: skip


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_make_builds_the_same_frozen_record(record: LogRecord) -> None:
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    made = make(type(record), **fields)
    assert made == record
    assert hash(made) == hash(record)
    assert repr(made) == repr(record)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.time = T  # type: ignore[misc]
