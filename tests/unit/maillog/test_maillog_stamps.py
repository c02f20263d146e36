"""Year-less syslog stamps in the logging host's zone, with the offset of each line's date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from trackmilter.maillog import LineParser, MessageRemoved
from trackmilter.maillog.stamps import in_zone, parse_syslog_stamp

BERLIN = ZoneInfo("Europe/Berlin")
CEST, CET = timedelta(hours=2), timedelta(hours=1)
# What the default clock gives in Berlin in November: a fixed offset, winter's.
NOVEMBER = datetime(2026, 11, 2, 12, 0, tzinfo=timezone(CET))


def _time(parser: LineParser, stamp: str) -> datetime:
    record = parser.parse(f"{stamp} mx postfix/qmgr[1]: ABC: removed")
    assert isinstance(record, MessageRemoved)
    return record.time


@pytest.mark.parametrize(
    ("stamp", "offset"),
    [
        pytest.param("Oct 24 12:00:00", CEST, id="before-the-change"),
        pytest.param("Oct 25 01:59:59", CEST, id="just-before"),
        pytest.param("Oct 25 03:00:00", CET, id="just-after"),
        pytest.param("Oct 26 12:00:00", CET, id="after-the-change"),
        pytest.param("Mar 29 01:30:00", CET, id="before-spring"),
        pytest.param("Mar 29 03:30:00", CEST, id="after-spring"),
    ],
)
def test_summer_time_lines_read_in_winter_keep_their_offset(stamp: str,
                                                            offset: timedelta) -> None:
    """Read in November, a line from October's summer time is still +02:00: the old code
    gave every line the offset of the clock's now."""
    parser = LineParser(clock=lambda: NOVEMBER, zone=BERLIN)
    assert _time(parser, stamp).utcoffset() == offset


def test_the_repeated_hour_does_not_go_back_in_time() -> None:
    """02:00-03:00 on 25 October 2026 happens twice in Berlin: a log that goes from 02:50
    to 02:10 has crossed the change, it did not go back 40 minutes."""
    parser = LineParser(clock=lambda: NOVEMBER, zone=BERLIN)
    first = _time(parser, "Oct 25 02:50:00")
    second = _time(parser, "Oct 25 02:10:00")
    assert first.utcoffset() == CEST
    assert second.utcoffset() == CET
    assert second - first == timedelta(minutes=20)


def test_a_reference_gives_its_zone_unless_one_is_named() -> None:
    reference = datetime(2026, 11, 2, tzinfo=timezone(CET))
    assert _time(LineParser(reference=reference), "Oct 24 12:00:00").utcoffset() == CET
    named = LineParser(reference=reference, zone=BERLIN)
    assert _time(named, "Oct 24 12:00:00").utcoffset() == CEST


def test_default_is_the_system_zone_on_the_line_s_own_date() -> None:
    """Without a zone or a reference, each date asks the system (whatever TZ the test
    runs under), not the offset in force now."""
    parser = LineParser(clock=lambda: NOVEMBER)
    for stamp, naive in [("Jul  1 12:00:00", datetime(2026, 7, 1, 12)),
                         ("Jan  1 12:00:00", datetime(2026, 1, 1, 12))]:
        when = _time(parser, stamp)
        assert when == naive.astimezone()
        assert when.utcoffset() == naive.astimezone().utcoffset()


def test_in_zone() -> None:
    naive = datetime(2026, 10, 25, 2, 30)
    assert in_zone(naive, BERLIN).utcoffset() == CEST
    assert in_zone(naive.replace(fold=1), BERLIN).utcoffset() == CET
    assert in_zone(naive, None).utcoffset() == naive.astimezone().utcoffset()


def test_parse_syslog_stamp_zone_and_year() -> None:
    when = parse_syslog_stamp("Dec 31 23:00:00", datetime(2027, 1, 2, tzinfo=BERLIN), BERLIN)
    assert when == datetime(2026, 12, 31, 23, tzinfo=BERLIN)


def test_a_naive_reference_is_a_local_time() -> None:
    when = _time(LineParser(reference=datetime(2026, 11, 2, 12)), "Nov  1 12:00:00")
    assert when == datetime(2026, 11, 1, 12).astimezone()
