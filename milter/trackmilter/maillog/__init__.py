"""MTA delivery logs: pure line parsers (Postfix, Sendmail) and a tail -F style follower."""

from __future__ import annotations

from trackmilter.follow import FileFollower, Position, read_stream
from trackmilter.maillog.parse import LineParser, parse_line
from trackmilter.maillog.records import (
    OUTCOMES,
    BounceNotice,
    Delivery,
    DeliveryStatus,
    Flavor,
    LogRecord,
    MessageExpired,
    MessageId,
    MessageQueued,
    MessageRemoved,
    RecordType,
    Rejection,
)

__all__ = [
    "BounceNotice",
    "Delivery",
    "DeliveryStatus",
    "FileFollower",
    "Flavor",
    "LineParser",
    "LogRecord",
    "MessageExpired",
    "MessageId",
    "MessageQueued",
    "MessageRemoved",
    "OUTCOMES",
    "Position",
    "RecordType",
    "Rejection",
    "parse_line",
    "read_stream",
]
