"""The systemd journal as a maillog source: what `journalctl` writes, as syslog lines.

journald keeps each log line as an entry of fields; `journalctl -o json` writes one entry
per line (MESSAGE, SYSLOG_IDENTIFIER such as `postfix/smtp`, SYSLOG_PID/_PID,
__REALTIME_TIMESTAMP in microseconds since the epoch, _HOSTNAME, __CURSOR). Each entry is
turned here into the syslog line the MTA's parser already reads
(`2026-11-27T00:00:23.123456+00:00 lab postfix/smtp[6911]: 4633B20E19D: to=<...` — an
RFC 3339 stamp in UTC, the host, the program and pid, the message), so there is one
Postfix parser and one Sendmail parser whatever the source. `journalctl -o short-iso` and
`-o short-iso-precise` lines are syslog lines already (a stamp with its zone offset) and
pass unchanged, as does any line that is not a JSON object: the kind is told per line.

Without `--all`, journalctl leaves out what it will not print: `-o json` writes null
for a field over 4096 bytes, the short formats `[228B blob data]` for a message that is
not UTF-8 text. Such lines are counted and reported as malformed, saying to add `--all`.

`-o cat` cannot be read: it keeps the message only, without the time, the host and the
program that logged it (whose name says which delivery agent it was). Lines of that
shape are told apart and the follower says once how to run journalctl instead.

The cursor of the last entry read is kept (`cursor`): the daemon saves it with its
state once that entry's events are stored, so a restart can ask journalctl for what
came after it (`--after-cursor`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trackmilter.follow import write_atomically

__all__ = [
    "CURSOR_KEY",
    "JournalLines",
    "entry_line",
    "load_cursor",
    "save_cursor",
]

CURSOR_KEY = "cursor"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# `-o cat`: the message alone, starting with a queue id (`4633B20E19D: to=<`).
_CAT_LINE = re.compile(r"^[0-9A-Za-z]{5,}: (?:to|from)=<", re.MULTILINE | re.ASCII)
# journalctl's short formats without --all show a message that is not UTF-8 text as its
# size (`2026-11-27T00:18:45+0000 lab postfix/smtp[15569]: [228B blob data]`).
_BLOB_LINE = re.compile(r"^.*\]: \[[0-9.]+[A-Za-z]* blob data\]$", re.MULTILINE)
_BLOB_REASON = ("journalctl showed [... blob data] instead of the message (a message "
                "that is not UTF-8 text): run it with --all")
_DIGITS = re.compile(r"\d+", re.ASCII)
_NEWLINES = str.maketrans("\r\n", "  ")

# Told about an input line that could not be read: the line and why, in words.
MalformedHandler = Callable[[str, str], None]


class MalformedEntry(ValueError):
    """A journal line that is not an entry we can turn into a log line; says why."""


def _message(value: object) -> str:
    """MESSAGE as text: journalctl writes a string, or an array of byte values when the
    message is not valid UTF-8 or holds control characters, or null when it is longer
    than 4096 bytes and `--all` was not given."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        try:
            return bytes(value).decode("utf-8", "replace")
        except (TypeError, ValueError):
            raise MalformedEntry("MESSAGE is an array but not of byte values") from None
    if value is None:
        raise MalformedEntry("MESSAGE is null: journalctl writes null for a field longer "
                             "than 4096 bytes unless it is run with --all")
    raise MalformedEntry(f"MESSAGE is a {type(value).__name__}, not text")


def _field(entry: dict[str, object], *names: str) -> str | None:
    for name in names:
        value = entry.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def entry_line(entry: dict[str, object]) -> str | None:
    """The syslog line for one journal entry (a `journalctl -o json` object); None for
    an entry without a message (structured entries some programs log), which is no line.

    Raises MalformedEntry, saying why, when the entry cannot be placed in time.
    """
    if "MESSAGE" not in entry:
        return None
    message = _message(entry["MESSAGE"]).translate(_NEWLINES)
    stamp = entry.get("__REALTIME_TIMESTAMP")
    if not isinstance(stamp, str) or not _DIGITS.fullmatch(stamp):
        raise MalformedEntry("no __REALTIME_TIMESTAMP (microseconds since the epoch): "
                             "not what journalctl -o json writes")
    try:
        when = _EPOCH + timedelta(microseconds=int(stamp))
    except OverflowError:
        raise MalformedEntry(f"__REALTIME_TIMESTAMP {stamp} is out of range") from None
    program = _field(entry, "SYSLOG_IDENTIFIER", "_COMM") or "-"
    pid = _field(entry, "SYSLOG_PID", "_PID")
    host = _field(entry, "_HOSTNAME") or "-"
    # A pid is always shown (the parsers expect `program[pid]:`); 0 when journald has none.
    pid = pid if pid is not None and _DIGITS.fullmatch(pid) else "0"
    return (f"{when.isoformat(timespec='microseconds')} {host.replace(' ', '_')} "
            f"{program.replace(' ', '_')}[{pid}]: {message}")


class JournalLines:
    """Turns blocks of what journalctl writes into blocks of syslog lines, line for line.

    A line holding a JSON object is a `journalctl -o json` entry (`-o json-seq`'s record
    separator is allowed before it); it becomes its syslog line, or an empty line when
    it has no message or cannot be read (told to `on_malformed` with the reason, and
    counted in `malformed`). Every other line is left as it is: short-iso, short-iso-
    precise and plain syslog lines are read by the parsers directly. The number of lines
    never changes, so lines read are counted the same whatever the input.
    """

    def __init__(self, on_malformed: MalformedHandler | None = None,
                 on_cat: Callable[[str], None] | None = None) -> None:
        self.cursor: str | None = None  # of the last entry read
        self.entries = 0  # JSON entries read
        self.malformed = 0  # lines that could not be read, since the start
        self.on_malformed = on_malformed
        self.on_cat = on_cat  # told once, with the first `-o cat` line met
        self._cat_told = False

    def convert(self, block: str) -> str:
        """The block with each journal entry replaced by its syslog line."""
        if not self._cat_told and self.on_cat is not None:
            cat = _CAT_LINE.search(block)
            if cat is not None:
                self._cat_told = True
                end = block.find("\n", cat.start())
                self.on_cat(block[cat.start():end if end >= 0 else len(block)])
        if " blob data]" in block:
            block = _BLOB_LINE.sub(self._blob, block)
        if not (block.startswith(("{", "\x1e")) or "\n{" in block or "\n\x1e" in block):
            return block  # no JSON here: syslog or short-iso lines, as they are
        lines = block.split("\n")  # not splitlines: \f, \x1c, ... are text
        for i, line in enumerate(lines):
            if line.startswith("\x1e"):  # -o json-seq
                line = line[1:]
            if line.startswith("{"):
                lines[i] = self._entry(line)
        return "\n".join(lines)

    def _blob(self, m: re.Match[str]) -> str:
        self._malformed(m.group(0), _BLOB_REASON)
        return ""

    def _malformed(self, line: str, reason: str) -> None:
        self.malformed += 1
        if self.on_malformed is not None:
            self.on_malformed(line, reason)

    def _entry(self, line: str) -> str:
        try:
            try:
                entry = json.loads(line)
            except ValueError:
                raise MalformedEntry(
                    "not a JSON object on one line (journalctl -o json writes one entry "
                    "per line; json-pretty is not read)") from None
            if not isinstance(entry, dict):
                raise MalformedEntry("not a JSON object")
            converted = entry_line(entry)
        except MalformedEntry as exc:
            self._malformed(line, str(exc))
            return ""
        self.entries += 1
        cursor = entry.get("__CURSOR")
        if isinstance(cursor, str) and cursor:
            self.cursor = cursor
        return "" if converted is None else converted


def save_cursor(path: Path, cursor: str, consumer: str | None = None) -> None:
    """Save the journal cursor (and the consumer's state, JSON text) atomically.

    The cursor comes first in the file, on its own: a shell can take it out with
    `sed -n 's/^{"cursor": "\\([^"]*\\)".*/\\1/p'` (a cursor is letters, digits, `=` and
    `;`). The file has the shape `load_consumer_state` reads.
    """
    text = "{" + f'"{CURSOR_KEY}": {json.dumps(cursor)}'
    if consumer is not None:
        text += f', "consumer": {consumer}'
    text += "}\n"
    write_atomically(path, text)


def load_cursor(path: Path) -> str | None:
    """The journal cursor saved in `path`; None when there is none (no file, a file
    follower's position, or a file that cannot be read)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cursor = data.get(CURSOR_KEY) if isinstance(data, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None
