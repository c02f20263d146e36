"""Log timestamps: traditional syslog (`Nov 26 23:07:05`, no year) and RFC 3339."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["FRAME", "MONTHS", "parse_rfc3339", "parse_syslog_stamp"]

# The start of every syslog line, as a regular expression to prefix a program's pattern:
# a traditional stamp (`Nov 26 23:07:05`, also what Postfix's `maillog_file` writes) or
# RFC 3339 (rsyslog's default on Debian 12), then the host name. Only the shape is
# checked here; parse_syslog_stamp / parse_rfc3339 validate the values.
FRAME = (
    r"^(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    r"|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?) (?P<host>[^ \r\n]+) "
)

MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}

# A line may be stamped a little after the reference (clock skew between hosts, a
# reference taken just before the line was written); anything further ahead belongs to
# the previous year (a log read in January still holds December's lines).
FUTURE_SLACK = timedelta(days=1)


def parse_syslog_stamp(stamp: str, reference: datetime) -> datetime | None:
    """`Nov 26 23:07:05` (day space-padded) in the year that puts it nearest before `reference`.

    The traditional format, and Postfix's own `maillog_file`, carry neither year nor zone:
    the zone is the reference's (the logging host's local time) and the year is the
    latest one that does not put the line more than a day after the reference.
    """
    month = MONTHS.get(stamp[:3])
    if month is None or len(stamp) != 15:
        return None
    try:
        day, hour = int(stamp[4:6]), int(stamp[7:9])
        minute, second = int(stamp[10:12]), int(stamp[13:15])
    except ValueError:
        return None
    limit = reference + FUTURE_SLACK
    # Newest first; 8 years back reaches the previous leap year for a 29 February.
    for year in range(limit.year, limit.year - 8, -1):
        try:
            when = datetime(year, month, day, hour, minute, second, tzinfo=reference.tzinfo)
        except ValueError:  # 29 February outside a leap year, 31 April, hour 24, ...
            continue
        if when <= limit:
            return when
    return None


def parse_rfc3339(stamp: str, reference: datetime) -> datetime | None:
    """`2026-11-26T23:07:05.123456+00:00` (rsyslog's default on Debian 12); None when invalid.

    A stamp without an offset is taken in the reference's zone, like a traditional one.
    """
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        return when.replace(tzinfo=reference.tzinfo)
    return when
