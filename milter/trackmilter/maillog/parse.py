"""Parse syslog lines of an MTA: one line (`parse`) or a block of text (`scan`).

Each flavor module supplies one compiled pattern for the lines worth keeping and a
builder for its matches; this module adds the timestamp, which needs a year for the
traditional syslog stamp and so a reference date.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import datetime, tzinfo
from itertools import repeat

from trackmilter.maillog import postfix, sendmail
from trackmilter.maillog.records import Flavor, LogRecord, RecordType
from trackmilter.maillog.stamps import parse_rfc3339, parse_syslog_stamp

__all__ = ["LineParser", "local_now", "parse_line"]

Clock = Callable[[], datetime]
# Told about a line whose record could not be built (the line, the exception).
ErrorHandler = Callable[[str, Exception], None]
Builder = Callable[[re.Match[str], Callable[[str], datetime | None]], LogRecord | None]

_FLAVORS: dict[str, tuple[re.Pattern[str], Builder, dict[RecordType, tuple[str, ...]]]] = {
    "postfix": (postfix.PATTERN, postfix.build_postfix_record, postfix.TRIGGERS),
    "sendmail": (sendmail.PATTERN, sendmail.build_sendmail_record, sendmail.TRIGGERS),
}


def local_now() -> datetime:
    """Now, in the local zone (the zone traditional syslog stamps are written in)."""
    return datetime.now().astimezone()


# `zone` not given: the reference's zone when there is a reference, else the system's.
_FROM_REFERENCE = object()


class LineParser:
    """Parses the log of one MTA flavor; keep one per log stream.

    `kinds` limits the records produced (all kinds by default); a caller that only needs
    `OUTCOMES` lets `scan` skip every other line without looking at it.
    Year-less stamps are placed relative to `reference` when given (tests, replaying an
    old file), else relative to `clock()`, read only when a new stamp is seen: the last
    stamp is cached, as a busy log repeats the same second over many lines. Stamps
    without a zone are read in `zone`: by default the reference's zone when a reference
    is given, else the system's local time with the offset of each line's own date
    (a log read in winter still holds summer's lines); None asks for the latter.
    A line whose record cannot be built (a parser bug, a shape the pattern lets through)
    gives no record, like any line we do not know, and is passed to `on_error`: a
    follower must not stop for ever on one line it would meet again after a restart.
    """

    def __init__(
        self,
        flavor: Flavor = "postfix",
        *,
        reference: datetime | None = None,
        clock: Clock = local_now,
        kinds: Collection[RecordType] | None = None,
        on_error: ErrorHandler | None = None,
        zone: tzinfo | None | object = _FROM_REFERENCE,
    ) -> None:
        try:
            self._pattern, self._build, triggers = _FLAVORS[flavor]
        except KeyError:
            raise ValueError(
                f"unknown log flavor {flavor!r} (expected postfix or sendmail)"
            ) from None
        self.flavor = flavor
        self.kinds = frozenset(triggers if kinds is None else kinds)
        self._triggers = sorted({t for kind in self.kinds for t in triggers.get(kind, ())})
        self._all_kinds = self.kinds >= triggers.keys()
        self._reference = reference
        self._clock = clock
        self._zone: tzinfo | None
        if zone is _FROM_REFERENCE:
            self._zone = reference.tzinfo if reference is not None else None
        elif zone is None or isinstance(zone, tzinfo):
            self._zone = zone
        else:
            raise TypeError(f"zone must be a tzinfo or None, not {zone!r}")
        self.on_error = on_error
        self._last: tuple[str, datetime | None] = ("", None)

    def parse(self, line: str) -> LogRecord | None:
        """The record for a line that says something about a message; None for any other."""
        m = self._pattern.match(line)
        return None if m is None else self._record(m)

    def scan(self, text: str) -> Iterator[LogRecord]:
        """The records of the lines in `text` (a block of whole lines), in order.

        When only some kinds are wanted, only the lines holding one of their trigger
        literals reach the pattern: finding those is a substring search in C, so most
        lines cost no Python step at all. With every kind wanted, most lines are
        candidates and matching each line is cheaper than collecting them.
        """
        match, record = self._pattern.match, self._record
        matches: Iterable[re.Match[str] | None]
        if self._all_kinds:
            matches = map(match, text.split("\n"))  # not splitlines: \f, \x1c, ... are text
        else:
            # dict.fromkeys: a line holding two triggers is matched once.
            matches = map(match, repeat(text), dict.fromkeys(self._candidate_lines(text)))
        for m in matches:
            if m is not None:
                r = record(m)
                if r is not None:
                    yield r

    def _candidate_lines(self, text: str) -> list[int]:
        """Start offsets of the lines that contain a trigger, in order (maybe repeated)."""
        starts: list[int] = []
        find, rfind, add = text.find, text.rfind, starts.append
        for trigger in self._triggers:
            pos = find(trigger)
            while pos >= 0:
                add(rfind("\n", 0, pos) + 1)
                pos = find(trigger, pos + 1)
        if len(self._triggers) > 1:
            starts.sort()  # ascending runs, one per trigger: a merge, not a full sort
        return starts

    def _record(self, m: re.Match[str]) -> LogRecord | None:
        try:
            r = self._build(m, self._time)
        except Exception as exc:  # noqa: BLE001 - one bad line must not stop the stream
            if self.on_error is not None:
                self.on_error(m.group(0), exc)
            return None
        return r if self._all_kinds or type(r) in self.kinds else None

    def _time(self, stamp: str) -> datetime | None:
        last_stamp, last_time = self._last
        if stamp == last_stamp:
            return last_time
        if stamp[:1].isdigit():
            when = parse_rfc3339(stamp, self._zone)
        else:
            reference = self._reference or self._clock()
            when = parse_syslog_stamp(stamp, reference, self._zone, after=last_time)
        self._last = (stamp, when)
        return when


def parse_line(
    line: str, flavor: Flavor = "postfix", *, reference: datetime | None = None
) -> LogRecord | None:
    """Parse one line on its own (a stream should keep one `LineParser` instead)."""
    return LineParser(flavor, reference=reference).parse(line)
