"""Log timestamps: traditional syslog (`Nov 26 23:07:05`, no year) and RFC 3339."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone, tzinfo

__all__ = ["FRAME", "MONTHS", "in_zone", "parse_rfc3339", "parse_syslog_stamp"]

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


def in_zone(naive: datetime, zone: tzinfo | None) -> datetime:
    """A wall-clock time read in `zone`; None: the system's local time *on that date*.

    Why not the offset of now: a log read in November still holds October's lines,
    written in summer time. `astimezone()` on a naive time asks the C library
    (mktime/localtime) for that date's offset, honouring `fold` in a repeated hour.
    The result has a fixed offset either way: two times that share a ZoneInfo are
    compared and subtracted by their wall clocks, which is wrong in the repeated hour.
    """
    if zone is None:
        return naive.astimezone()
    if isinstance(zone, timezone):
        return naive.replace(tzinfo=zone)
    offset = naive.replace(tzinfo=zone).utcoffset()
    if offset is None:  # a tzinfo that does not know (none of the standard ones)
        return naive.replace(tzinfo=zone)
    return naive.replace(tzinfo=timezone(offset), fold=0)


def parse_syslog_stamp(
    stamp: str, reference: datetime, zone: tzinfo | None = None,
    after: datetime | None = None,
) -> datetime | None:  # fmt: skip
    """`Nov 26 23:07:05` (day space-padded) in the year that puts it nearest before `reference`.

    The traditional format, and Postfix's own `maillog_file`, carry neither year nor zone:
    the zone is the logging host's, `zone` (None: this system's local time, with the
    offset in force on that date), and the year is the latest one that does not put the
    line more than a day after the reference. In the hour a change from summer time
    repeats, the first reading is taken unless it would put the line before `after`
    (the previous line's time): a log does not go back an hour.
    """
    month = MONTHS.get(stamp[:3])
    if month is None or len(stamp) != 15:
        return None
    try:
        day, hour = int(stamp[4:6]), int(stamp[7:9])
        minute, second = int(stamp[10:12]), int(stamp[13:15])
    except ValueError:
        return None
    if reference.tzinfo is None:  # a naive reference is a local time too
        reference = reference.astimezone()
    limit = reference + FUTURE_SLACK
    # Newest first; 8 years back reaches the previous leap year for a 29 February.
    for year in range(limit.year, limit.year - 8, -1):
        try:
            naive = datetime(year, month, day, hour, minute, second)
        except ValueError:  # 29 February outside a leap year, 31 April, hour 24, ...
            continue
        when = in_zone(naive, zone)
        if when <= limit:
            if after is not None and when < after:
                later = in_zone(naive.replace(fold=1), zone)
                if later >= after:
                    return later
            return when
    return None


def parse_rfc3339(stamp: str, zone: tzinfo | None = None) -> datetime | None:
    """`2026-11-26T23:07:05.123456+00:00` (rsyslog's default on Debian 12); None when invalid.

    A stamp without an offset is taken in `zone`, like a traditional one.
    """
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        return in_zone(when, zone)
    return when
