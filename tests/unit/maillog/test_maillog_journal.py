"""The systemd journal as a source: what journalctl writes becomes what the parsers read.

The recorded fixtures (data/journal-postfix-3.7.*) are the real journalctl's output for a
real journal file made of real Postfix 3.7 lines (see journal_export.py); the tests
marked `journal_file` write such a file themselves with systemd-journal-remote and ask
the real journalctl, as an administrator's recipe does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from tests.unit.maillog import journal_export as je

from trackmilter.follow import load_consumer_state
from trackmilter.maillog.daemon import (
    KINDS,
    LOG_MALFORMED_FIRST,
    RESUME_COMMAND,
    Queues,
    consume,
    follow_stream,
    journal_lines,
    restore_queues,
)
from trackmilter.maillog.journal import JournalLines, entry_line, load_cursor, save_cursor
from trackmilter.maillog.parse import LineParser
from trackmilter.maillog.records import Delivery, LogRecord
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, Event

DATA = Path(__file__).parent / "data"
REFERENCE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
JSON = DATA / "journal-postfix-3.7.json"
SHORT_ISO = DATA / "journal-postfix-3.7.short-iso.log"
PRECISE = DATA / "journal-postfix-3.7.short-iso-precise.log"
SOURCES = [DATA / name for name in je.SOURCES]

needs_journal_remote = pytest.mark.skipif(
    not je.JOURNAL_REMOTE.exists() or shutil.which("journalctl") is None,
    reason="no systemd-journal-remote (Debian: apt-get install systemd-journal-remote)")


class RecordingLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **kw: Any) -> None:
        self.lines.append((event, kw))

    info = warning


class Sink:
    def __init__(self, ok: bool = True) -> None:
        self.events: list[DeliveryObserved] = []
        self.ok = ok

    def submit(self, event: Event) -> None:
        assert isinstance(event, DeliveryObserved)
        self.events.append(event)

    def flush(self, timeout: float | None = None) -> bool:
        return self.ok


def records(text: str) -> list[LogRecord]:
    return list(LineParser("postfix", reference=REFERENCE, zone=UTC).scan(text))


def same_line(r: LogRecord) -> tuple[object, ...]:
    """A record without its time's microseconds (journald stamps them, syslog does not)."""
    fields = dict(vars(r))
    fields["time"] = fields["time"].replace(microsecond=0)
    return (type(r).__name__, *sorted(fields.items()))


def syslog_records() -> list[tuple[object, ...]]:
    return [same_line(r) for path in SOURCES for r in records(path.read_text())]


def converted(text: str) -> tuple[str, JournalLines, list[tuple[str, str]]]:
    bad: list[tuple[str, str]] = []
    journal = JournalLines(on_malformed=lambda line, why: bad.append((line, why)))
    return journal.convert(text), journal, bad


# -- the recorded output of the real journalctl ------------------------------------------

def test_json_entries_give_the_records_of_the_syslog_lines() -> None:
    text, journal, bad = converted(JSON.read_text())
    assert bad == [] and journal.malformed == 0
    got = [same_line(r) for r in records(text)]
    # The same lines, the same records (time to the second, host, program, every field);
    # then the one reply in Latin-1, which is only in the journal fixture.
    assert got[:-1] == syslog_records()
    [latin1] = records(text)[-1:]
    assert isinstance(latin1, Delivery)
    assert (latin1.queue_id, latin1.recipients, latin1.status) == (
        "2D1B520C67D", ("umlaut@example.net",), "bounced")
    assert "550 5.1.1 Empf\ufffdnger unbekannt" in latin1.reply  # bytes -> text, replaced
    # Line for line: lines read are counted the same, whatever the input's shape.
    assert text.count("\n") == JSON.read_text().count("\n")


def test_json_times_are_journald_realtime_in_utc() -> None:
    text, _journal, _bad = converted(JSON.read_text())
    first = next(r for r in records(text) if isinstance(r, Delivery))
    entry = next(json.loads(line) for line in JSON.read_text().splitlines()
                 if line.startswith("{") and first.queue_id in line and "to=<" in line)
    assert first.time == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        microseconds=int(entry["__REALTIME_TIMESTAMP"]))
    assert first.time.utcoffset() is not None and first.time.microsecond == 5123


def test_the_cursor_is_the_last_entrys() -> None:
    _text, journal, _bad = converted(JSON.read_text())
    last = json.loads(JSON.read_text().splitlines()[-1])
    assert journal.cursor == last["__CURSOR"] and journal.cursor.startswith("s=")
    assert journal.entries == 38


@pytest.mark.parametrize("path", [SHORT_ISO, PRECISE], ids=["short-iso", "short-iso-precise"])
def test_short_iso_lines_are_read_as_they_are(path: Path) -> None:
    text, journal, bad = converted(path.read_text())
    # Without --all journalctl shows the Latin-1 reply as "[228B blob data]": that line
    # cannot be read and says so; every other one gives the syslog line's record.
    [(line, why)] = bad
    assert line.endswith("postfix/smtp[15569]: [228B blob data]") and "--all" in why
    assert [same_line(r) for r in records(text)] == syslog_records()
    assert journal.cursor is None  # no cursor in these formats


def test_short_iso_precise_keeps_the_microseconds() -> None:
    json_times = [r.time for r in records(converted(JSON.read_text())[0])]
    assert [r.time for r in records(PRECISE.read_text())] == json_times[:-1]


# -- every shape journalctl can write, and what it is not --------------------------------

def entry(**fields: object) -> str:
    base: dict[str, object] = {
        "__CURSOR": "s=1;i=2", "__REALTIME_TIMESTAMP": "1795737679005123",
        "_HOSTNAME": "mx1", "SYSLOG_IDENTIFIER": "postfix/smtp", "SYSLOG_PID": "7548",
        "_PID": "7548",
        "MESSAGE": "31E3220E2B9: to=<a@example.net>, relay=mx[192.0.2.1]:25, delay=0.07, "
                   "dsn=2.0.0, status=sent (250 ok)"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


def test_an_entry_is_its_syslog_line() -> None:
    assert converted(entry())[0] == (
        "2026-11-27T00:01:19.005123+00:00 mx1 postfix/smtp[7548]: 31E3220E2B9: "
        "to=<a@example.net>, relay=mx[192.0.2.1]:25, delay=0.07, dsn=2.0.0, status=sent "
        "(250 ok)")


def test_missing_optional_fields_have_stand_ins() -> None:
    line = entry_line(json.loads(entry(SYSLOG_PID=..., _PID=..., _HOSTNAME=...,
                                       SYSLOG_IDENTIFIER=..., _COMM="smtp")))
    assert line is not None and line.startswith("2026-11-27T00:01:19.005123+00:00 - smtp[0]: ")
    # A message with newlines stays one line.
    line = entry_line(json.loads(entry(MESSAGE="a\nb\rc")))
    assert line is not None and line.endswith(": a b c")


def test_json_seq_record_separators_are_allowed() -> None:
    text, journal, bad = converted("\x1e" + entry() + "\n\x1e" + entry(__CURSOR="s=2") + "\n")
    assert not bad and journal.entries == 2 and journal.cursor == "s=2"
    assert len(records(text)) == 2


def test_an_entry_without_message_is_no_line_and_no_error() -> None:
    text, journal, bad = converted(entry(MESSAGE=...) + "\n")
    assert (text, bad, journal.entries, journal.cursor) == ("\n", [], 1, "s=1;i=2")


@pytest.mark.parametrize(("line", "why"), [
    ("{not json", "not a JSON object on one line"),
    ("{", "json-pretty is not read"),
    ('{"a": 1} trailing', "not a JSON object on one line"),
    (entry(MESSAGE=None), "longer than 4096 bytes unless it is run with --all"),
    (entry(MESSAGE=[300, 1]), "not of byte values"),
    (entry(MESSAGE={"x": 1}), "MESSAGE is a dict"),
    (entry(__REALTIME_TIMESTAMP=...), "no __REALTIME_TIMESTAMP"),
    (entry(__REALTIME_TIMESTAMP="12.5"), "no __REALTIME_TIMESTAMP"),
    (entry(__REALTIME_TIMESTAMP=1795737679005123), "no __REALTIME_TIMESTAMP"),
    (entry(__REALTIME_TIMESTAMP="9" * 30), "out of range"),
])
def test_malformed_entries_are_counted_with_a_reason(line: str, why: str) -> None:
    good = entry()
    text, journal, bad = converted(f"{good}\n{line}\n{good}\n")
    assert [w for _l, w in bad] == [bad[0][1]] and why in bad[0][1]
    assert bad[0][0] == line and journal.malformed == 1
    lines = text.split("\n")
    assert len(lines) == 4 and lines[1] == "" and len(records(text)) == 2


def test_only_objects_are_entries() -> None:
    # A line that starts with "[" is not an entry: passed on as it is, and is no record;
    # an object without MESSAGE is an entry with nothing to say.
    text, journal, bad = converted('[1, 2]\n{"x": [1]}\n')
    assert (text, bad, journal.malformed, journal.entries) == ("[1, 2]\n\n", [], 0, 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=80).map(lambda s: "{" + s),
    st.dictionaries(st.sampled_from(["MESSAGE", "__REALTIME_TIMESTAMP", "__CURSOR", "_PID",
                                     "SYSLOG_PID", "SYSLOG_IDENTIFIER", "_HOSTNAME", "_COMM"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=30),
                              st.lists(st.integers(-5, 300), max_size=5),
                              st.from_regex(r"\d{1,25}", fullmatch=True))).map(json.dumps),
    st.text(max_size=80).filter(lambda s: "\n" not in s)), max_size=8))
def test_no_input_line_raises(lines: list[str]) -> None:
    block = "\n".join(line.replace("\n", " ") for line in lines) + "\n"
    text, journal, bad = converted(block)
    assert text.count("\n") == block.count("\n")
    assert journal.malformed == len(bad)
    list(LineParser("postfix", reference=REFERENCE).scan(text))


def test_cat_output_is_told_once_how_to_run_journalctl() -> None:
    told: list[str] = []
    journal = JournalLines(on_cat=told.append)
    cat = ("31E3220E2B9: to=<a@example.net>, relay=mx[192.0.2.1]:25, delay=0.07, "
           "dsn=2.0.0, status=sent (250 ok)\n")
    journal.convert("connect from localhost[127.0.0.1]\n" + cat)
    journal.convert(cat)
    assert told == [cat.rstrip("\n")]
    # Lines with a stamp (syslog, short-iso) are not -o cat output.
    told.clear()
    JournalLines(on_cat=told.append).convert(SHORT_ISO.read_text())
    assert told == []


# -- the daemon's side: counted, logged, the cursor saved once stored --------------------

def test_malformed_lines_are_counted_unparsed_and_logged_with_the_reason() -> None:
    log, metrics = RecordingLog(), Metrics(CollectorRegistry())
    journal = journal_lines(log, metrics)
    block = "{bad\n" * (LOG_MALFORMED_FIRST + 5) + "31E3220E2B9: to=<a@b>, status=sent\n"
    consume(journal.convert(block), LineParser("postfix", kinds=KINDS), Queues("lab"),
            Sink(), metrics, log)
    failed = [kw for event, kw in log.lines if event == "maillog_line_failed"]
    assert len(failed) == LOG_MALFORMED_FIRST  # then one in LOG_MALFORMED_EVERY
    assert failed[0]["stage"] == "journal" and "one entry per line" in failed[0]["reason"]
    assert failed[0]["line"] == "{bad"
    # The 25 bad lines and the -o cat line that looks like an outcome.
    sample = metrics.registry.get_sample_value
    assert sample("trackmilter_maillog_unparsed_lines_total") == LOG_MALFORMED_FIRST + 5 + 1
    assert sample("trackmilter_maillog_lines_total") == LOG_MALFORMED_FIRST + 6
    [unusable] = [kw for event, kw in log.lines if event == "maillog_input_unusable"]
    assert "journalctl -f -o json -u 'postfix@*'" in unusable["hint"]


def stream(state: Path | None, blocks: list[str], ok: bool = True,
           queues: Queues | None = None) -> tuple[Sink, JournalLines, RecordingLog]:
    sink, log, metrics = Sink(ok), RecordingLog(), Metrics(CollectorRegistry())
    journal = journal_lines(log, metrics)
    follow_stream(iter(blocks), journal, LineParser("postfix", kinds=KINDS),
                  queues or Queues("lab"), sink, metrics, log, state, lambda: False)
    return sink, journal, log


def json_blocks() -> list[str]:
    """The fixture cut in two blocks, as two reads of a pipe would give it."""
    lines = JSON.read_text().splitlines(keepends=True)
    return ["".join(lines[:25]), "".join(lines[25:])]


def test_the_cursor_is_saved_with_the_queues_once_stored(tmp_path: Path) -> None:
    state = tmp_path / "maillog.state"
    sink, journal, _log = stream(state, json_blocks())
    assert load_cursor(state) == journal.cursor is not None
    assert isinstance(load_consumer_state(state), dict)  # the queue book, as for a file
    statuses = sorted(str(e.status) for e in sink.events)
    assert statuses == sorted(["bounced"] * 3 + ["deferred"] * 4 + ["sent"] * 3)
    # A restart restores the queue book saved with the cursor.
    assert restore_queues(Queues("lab"), state, RecordingLog())


def test_nothing_is_saved_while_the_store_has_not_taken_the_events(tmp_path: Path) -> None:
    state = tmp_path / "maillog.state"
    stream(state, json_blocks(), ok=False)
    assert not state.exists()


def test_input_without_cursors_saves_no_state(tmp_path: Path) -> None:
    state = tmp_path / "maillog.state"
    sink, _journal, _log = stream(state, [SHORT_ISO.read_text()])
    assert sink.events and not state.exists()


def test_the_saved_cursor_is_what_the_documented_shell_takes_out(tmp_path: Path) -> None:
    state = tmp_path / "maillog.state"
    cursor = json.loads(JSON.read_text().splitlines()[-1])["__CURSOR"]
    save_cursor(state, cursor, json.dumps({"queues": {"A": ['x"cursor": "no']}}))
    out = subprocess.run(["sed", "-n", r's/^{"cursor": "\([^"]*\)".*/\1/p', str(state)],
                         capture_output=True, text=True, check=True).stdout
    assert out == cursor + "\n" and load_cursor(state) == cursor
    assert cursor in RESUME_COMMAND.format(cursor=cursor)


def test_a_file_followers_state_has_no_cursor(tmp_path: Path) -> None:
    state = tmp_path / "maillog.state"
    state.write_text('{"device": 1, "inode": 2, "offset": 3, "head_len": 0, "head": "x"}')
    assert load_cursor(state) is None
    state.write_text("not json")
    assert load_cursor(state) is None
    assert load_cursor(tmp_path / "missing") is None


# -- a real journal file, read by the real journalctl ------------------------------------

@pytest.fixture(scope="module")
def lab_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole lab log (432 real Postfix 3.7 lines) in a journal file."""
    lines = (DATA / "postfix-3.7-lab.log").read_text().splitlines()
    path = tmp_path_factory.mktemp("journal") / "postfix.journal"
    yield je.write_journal(je.entries(lines), path)


def outcomes(text: str) -> list[tuple[str, str, str]]:
    sink, metrics = Sink(), Metrics(CollectorRegistry())
    consume(text, LineParser("postfix", reference=REFERENCE, kinds=KINDS, zone=UTC),
            Queues("lab"), sink, metrics)
    return [(e.queue_id, e.recipient, str(e.status)) for e in sink.events]


@needs_journal_remote
def test_a_real_journal_read_with_the_readme_recipe(lab_journal: Path) -> None:
    want = outcomes((DATA / "postfix-3.7-lab.log").read_text())
    assert len(want) > 40
    for fmt in ("json", "short-iso", "short-iso-precise"):
        out = je.journalctl(lab_journal, "--all", "-u", "postfix@*", "-o", fmt)
        text, _journal, bad = converted(out)
        assert not bad, fmt
        assert outcomes(text) == want, fmt


@needs_journal_remote
def test_the_unit_is_postfix_at_dash_not_postfix(lab_journal: Path) -> None:
    assert je.journalctl(lab_journal, "-u", "postfix", "-o", "json") == ""
    assert je.journalctl(lab_journal, "-u", "postfix@-", "-o", "json").count("\n") == 432
    # Debian 12 ships postfix.service as a oneshot that starts the instance units.
    unit = Path("/lib/systemd/system/postfix@.service")
    if unit.exists():
        assert "postmulti -i %i -p start" in unit.read_text()


@needs_journal_remote
def test_after_the_saved_cursor_nothing_is_missed_or_repeated(lab_journal: Path,
                                                             tmp_path: Path) -> None:
    lines = je.journalctl(lab_journal, "-u", "postfix@*", "-o", "json").splitlines(True)
    state = tmp_path / "maillog.state"
    first, _journal, _log = stream(state, ["".join(lines[:200])])
    cursor = load_cursor(state)
    assert cursor == json.loads(lines[199])["__CURSOR"]
    # The restart, as the README's unit does it: the cursor from the state file.
    rest = je.journalctl(lab_journal, "-u", "postfix@*", "-o", "json",
                         f"--after-cursor={cursor}")
    # (journalctl writes an entry's fields in a different order on each run)
    assert [json.loads(line)["__CURSOR"] for line in rest.splitlines()] == [
        json.loads(line)["__CURSOR"] for line in lines[200:]]
    queues = Queues("lab")
    assert restore_queues(queues, state, RecordingLog())
    second, _journal, _log = stream(state, [rest], queues=queues)
    got = [(e.queue_id, e.recipient, str(e.status)) for e in first.events + second.events]
    assert got == outcomes((DATA / "postfix-3.7-lab.log").read_text())


def test_sendmail_entries_are_read_by_the_sendmail_parser() -> None:
    """`[maillog] format = "sendmail"`: the same conversion, Sendmail's parser."""
    log = (DATA / "sendmail.log").read_text()
    lines = je.json_lines(je.entries(log.splitlines(), unit="sendmail.service"))
    text, _journal, bad = converted(lines)
    parser = LineParser("sendmail", reference=REFERENCE, zone=UTC)
    want = [same_line(r) for r in LineParser("sendmail", reference=REFERENCE,
                                             zone=UTC).scan(log)]
    assert not bad and len(want) > 5
    assert [same_line(r) for r in parser.scan(text)] == want


README = Path(__file__).parents[3] / "README.md"
UNIT = Path(__file__).parents[3] / "systemd" / "trackmilter-maillog.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_the_readme_drop_in_loads_on_the_shipped_unit(tmp_path: Path) -> None:
    """The README's `systemctl edit` drop-in, as systemd reads it over the shipped unit."""
    text = README.read_text()
    start = text.index("systemctl edit trackmilter-maillog")
    block = text[start:text.index("```", start)].splitlines()[1:]
    drop_in = "\n".join(line.removeprefix("#   ") for line in block
                        if line.startswith("#   ")) + "\n"
    assert drop_in.startswith("[Service]\n") and "ExecStart=\n" in drop_in
    assert "SupplementaryGroups=systemd-journal" in drop_in
    script = tmp_path / "trackmilter-maillog-journal"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    shutil.copy(UNIT, tmp_path)
    (tmp_path / f"{UNIT.name}.d").mkdir()
    (tmp_path / f"{UNIT.name}.d" / "override.conf").write_text(
        drop_in.replace("/usr/local/bin/trackmilter-maillog-journal", str(script)))
    out = subprocess.run(["systemd-analyze", "verify", str(tmp_path / UNIT.name)],
                         env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=60)
    said = out.stdout + out.stderr
    # Only what this machine lacks (the venv in /opt/trackmilter) may be reported.
    assert "override.conf" not in said and str(script) not in said, said
