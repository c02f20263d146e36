"""`trackmilter maillog`: follow the MTA's log and store what the next hop said per recipient."""

from __future__ import annotations

import select
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from trackmilter.config import Settings
from trackmilter.daemon import start_metrics, store_from
from trackmilter.follow import (
    FileFollower,
    load_consumer_state,
    read_stream,
    warn_lost,
)
from trackmilter.judging import RevisionCounter, reviser_from
from trackmilter.logging import get_logger
from trackmilter.maillog.journal import JournalLines, load_cursor, save_cursor
from trackmilter.maillog.parse import LineParser
from trackmilter.maillog.queues import MAX_REMEMBERED, Queues, QueueStateError, received_ids
from trackmilter.maillog.records import (
    Delivery,
    Flavor,
    MessageExpired,
    MessageRemoved,
    RecordType,
)
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, Event, Reinjected
from trackmilter.store.base import WriteHook
from trackmilter.store.writer import BatchWriter

__all__ = [
    "KINDS",
    "MAX_REMEMBERED",
    "Queues",
    "QueueStateError",
    "bad_line_logger",
    "consume",
    "follow_file",
    "follow_stream",
    "journal_lines",
    "restore_queues",
    "run",
]

# How much of a line that could not be handled goes into the log.
MAX_LOGGED_CHARS = 300
# Malformed journal lines logged one by one before only every LOG_MALFORMED_EVERY-th is
# (all are counted): a stream of json-pretty output would otherwise log every line.
LOG_MALFORMED_FIRST = 20
LOG_MALFORMED_EVERY = 1000
# What an administrator runs to go on after the saved cursor (see the README).
RESUME_COMMAND = "journalctl -f -a -o json -u 'postfix@*' --after-cursor='{cursor}'"

KINDS: frozenset[RecordType] = frozenset({Delivery, MessageExpired, MessageRemoved})


class _Stopped(BaseException):
    """SIGTERM/SIGINT while blocked reading standard input (a BaseException, so that no
    `except Exception` on the way swallows it; raised only while blocked in a read)."""


class _FlaggedStream:
    """Standard input whose read1 says when it is blocked in it: only then may the stop
    signal's handler interrupt it (a read from a pipe is resumed after a signal, PEP 475);
    anywhere else the stop waits for the end of the block being processed."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.blocked = False

    def read1(self, n: int) -> bytes:
        self.blocked = True
        try:
            data: bytes = self._stream.read1(n)
            return data
        finally:
            self.blocked = False


class Sink(Protocol):
    def submit(self, event: Event) -> None: ...


class FlushingSink(Sink, Protocol):
    def flush(self, timeout: float | None = None) -> bool: ...


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LOGGED_CHARS else text[:MAX_LOGGED_CHARS] + "…"


def bad_line_logger(log: Any) -> Callable[[str, Exception], None]:
    """A `LineParser` on_error that logs the line (cut short) and the error, once per line."""

    def report(line: str, exc: Exception) -> None:
        log.warning("maillog_line_failed", stage="parse", line=_cut(line), error=_cut(repr(exc)))

    return report


def provider_of(address: str, providers: frozenset[str]) -> str:
    """The recipient's domain when it is one of [metrics] providers, else "other"."""
    domain = address.rpartition("@")[2].lower().rstrip(">")
    return domain if domain in providers else "other"


def consume(block: str, parser: LineParser, queues: Queues, sink: Sink,
            metrics: Metrics, log: Any = None, providers: frozenset[str] = frozenset()) -> int:
    """Parse a block of whole lines and submit the events it holds; return how many.

    A record the queue book or the sink fails on is logged and counted as unparsed, and
    the rest of the block goes on: a line that stopped the follower would stop it again
    after every restart, since the position does not move past it.
    """
    metrics.maillog_lines.inc(block.count("\n"))
    if parser.flavor == "postfix":
        # The whole block's first: a `client=` line a little after the hand-off that
        # created it (lines of several processes interleave) still counts.
        queues.received(received_ids(block))
    counts: Counter[str] = Counter()
    outcomes: Counter[tuple[str, str, str]] = Counter()
    submit = sink.submit
    outcome_lines = 0
    for record in parser.scan(block):
        try:
            tracked = queues.events(record)
            for item in tracked:
                submit(item)
        except Exception as exc:  # noqa: BLE001 - one record must not stop the follower
            (log or get_logger(component="maillog")).warning(
                "maillog_line_failed", stage="track", record=_cut(repr(record)),
                error=_cut(repr(exc)))  # fmt: skip
            continue
        if isinstance(record, (Delivery, MessageExpired)):
            outcome_lines += 1
        if tracked and isinstance(tracked[0], Reinjected):
            # A hand-off logged after outcomes under its new queue id: it is no outcome
            # itself (a record gives outcomes or this, never both), it ties those.
            if log is not None:
                late = tracked[0]
                log.info("hand_off_after_outcomes", queue_id=late.queue_id,
                         queued_as=late.queued_as, recipients=list(late.recipients),
                         at=late.at.isoformat(), mta=late.mta)
            continue
        events: list[DeliveryObserved] = tracked  # type: ignore[assignment]
        if isinstance(record, Delivery) and record.delay is not None and events:
            metrics.child(metrics.delivery_delay, str(record.status)).observe(record.delay)
        for ev in events:
            counts[ev.status] += 1
            if log is not None:  # one canonical line per delivery outcome, named as the
                # JSON API's delivery event (code: the enhanced status code; "" when absent)
                log.info("delivery", queue_id=ev.queue_id, recipient=ev.recipient,
                         status=str(ev.status), code=ev.dsn, relay=ev.relay,
                         transport=ev.transport, text=_cut(ev.text),
                         orig_to=ev.orig_to, delivered_to=ev.delivered_to,
                         at=ev.at.isoformat(), mta=ev.mta)
            outcomes[(str(ev.status), ev.dsn or "",
                      provider_of(ev.delivered_to or ev.recipient, providers))] += 1
    for status, n in counts.items():  # once per block, not per line
        metrics.child(metrics.maillog_deliveries, str(status)).inc(n)
    for labels, n in outcomes.items():
        metrics.child(metrics.delivery_outcomes, *labels).inc(n)
    # Every outcome line carries "status=" (Postfix) or "stat=" (Sendmail): those that
    # gave no record are malformed or of a shape we do not know; counted, never fatal.
    if parser.flavor == "sendmail":  # "stat=queued" is an arrival, not an outcome
        looks = block.count(" stat=") - block.count(" stat=queued")
    else:
        looks = block.count(" status=")
    metrics.maillog_unparsed.inc(max(0, looks - outcome_lines))
    return sum(counts.values())


def journal_lines(log: Any, metrics: Metrics) -> JournalLines:
    """A JournalLines whose malformed lines are counted as unparsed and logged with the
    reason (the first LOG_MALFORMED_FIRST, then one in LOG_MALFORMED_EVERY), and which
    says once that `journalctl -o cat` output cannot be read."""

    def malformed(line: str, reason: str) -> None:
        metrics.maillog_unparsed.inc()
        n = journal.malformed
        if n <= LOG_MALFORMED_FIRST or n % LOG_MALFORMED_EVERY == 0:
            log.warning("maillog_line_failed", stage="journal", reason=reason,
                        line=_cut(line), malformed_so_far=n)

    def cat(line: str) -> None:
        log.warning("maillog_input_unusable", line=_cut(line),
                    reason="a message without its time, host and program: journalctl -o cat "
                           "output cannot be tied to a delivery agent or a time",
                    hint="run journalctl -o json (or -o short-iso) instead, e.g. "
                         "journalctl -f -o json -u 'postfix@*' | trackmilter maillog -")

    journal = JournalLines(on_malformed=malformed, on_cat=cat)
    return journal


def follow_stream(blocks: Iterable[str], journal: JournalLines, parser: LineParser,
                  queues: Queues, sink: FlushingSink, metrics: Metrics, log: Any,
                  state_file: Path | None, should_stop: Callable[[], bool],
                  flush_timeout: float = 30.0,
                  providers: frozenset[str] = frozenset(), commit_interval: float = 1.0,
                  clock: Callable[[], float] = time.monotonic,
                  more_waiting: Callable[[], bool] = lambda: False) -> str | None:
    """Read blocks of a stream (standard input) to its end or until `should_stop()`.

    Journal entries (`journalctl -o json`) become syslog lines first. Once a block's
    events are stored (or spooled), the cursor of its last journal entry is saved in
    `state_file` with the queues' state: a restart with `journalctl --after-cursor`
    neither skips nor repeats an entry. Input without cursors saves nothing. Returns
    the cursor last saved (or restored), None when there is none.
    """
    saved = journal.cursor
    last = clock()

    def commit() -> None:
        nonlocal saved, last
        last = clock()
        if not sink.flush(timeout=flush_timeout):
            log.warning("maillog_flush_incomplete", timeout=flush_timeout)
        elif state_file is not None and journal.cursor is not None and journal.cursor != saved:
            try:
                save_cursor(state_file, journal.cursor, queues.dump())
                saved = journal.cursor
            except OSError as exc:
                log.warning("maillog_state_not_saved", error=str(exc))

    pending = False
    for block in blocks:
        consume(journal.convert(block), parser, queues, sink, metrics, log, providers)
        pending = True
        # Through a backlog (more input already waiting), reading goes on while the writer
        # stores what was read, and the cursor is saved, once stored, every second; caught
        # up, at once.
        if not more_waiting() or clock() - last >= commit_interval:
            commit()
            pending = False
        if should_stop():
            break
    if pending:
        commit()
    return saved


def restore_queues(queues: Queues, state_file: Path, log: Any) -> bool:
    """Restore what the last run saved with its position; a missing or damaged state
    is logged and the queue book starts empty. True when a state was restored."""
    try:
        data = load_consumer_state(state_file)
        if data is None:
            return False
        queues.restore(data)
    except ValueError as exc:  # QueueStateError, JSON, unreadable file
        log.warning("maillog_state_unreadable", state_file=str(state_file), error=_cut(str(exc)))
        return False
    return True


def follow_file(follower: FileFollower, parser: LineParser, queues: Queues,
                sink: FlushingSink, metrics: Metrics, log: Any,
                should_stop: Callable[[], bool], flush_timeout: float = 30.0,
                providers: frozenset[str] = frozenset(), commit_interval: float = 1.0,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Read blocks until `should_stop()`; save the position and the queues' state only once
    the sink has stored (or spooled) the events read before it: when caught up, and every
    `commit_interval` seconds through a backlog.

    A flush that does not finish leaves the saved position where it was: the next
    successful flush covers this block's events too, and a crash in between reads it again.
    """
    last = clock()
    pending = False

    def commit() -> None:
        nonlocal last, pending
        last = clock()
        if not sink.flush(timeout=flush_timeout):
            log.warning("maillog_flush_incomplete", timeout=flush_timeout)
            return
        try:
            follower.commit(queues.dump())
        except OSError as exc:
            log.warning("maillog_state_not_saved", error=str(exc))
        pending = False

    try:
        while not should_stop():
            block = follower.poll()
            if not block:
                if pending and clock() - last >= min(commit_interval, 0.1):
                    commit()  # caught up: stored and saved before waiting
                follower.sleep(follower.poll_interval)
                continue
            consume(block, parser, queues, sink, metrics, log, providers)
            pending = True
            # A backlog is read while the writer stores what came before; the position is
            # saved, once stored, every `commit_interval` seconds and when caught up.
            if clock() - last >= commit_interval:
                commit()
        if pending:
            commit()
    finally:
        follower.close()


def _input_waiting() -> bool:
    """More standard input can be read at once (a backlog, or a file): not caught up."""
    try:
        return bool(select.select([sys.stdin.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def run(settings: Settings, *, hooks: Sequence[WriteHook]) -> int:
    """Follow until SIGTERM/SIGINT (or the end of standard input); flush before exiting."""
    m = settings.maillog
    stop = [False]
    reading_stdin = m.path == "-"
    stdin = _FlaggedStream(sys.stdin.buffer)

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop[0] = True
        if stdin.blocked:
            raise _Stopped

    # Before any thread starts: a stop asked for during start-up is a stop, not a kill.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log = get_logger(component="maillog")
    metrics = Metrics.for_daemon("maillog", mta=m.mta_name, maillog_file=(m.path, m.state_file))
    # With a reviser: a delivery time stored after the tracker's hits revises their verdicts.
    store = store_from(settings, hooks=(*hooks, RevisionCounter(metrics)),
                       reviser=reviser_from(settings))
    # Its own spool directory: two processes must never append to the same segments.
    writer = BatchWriter.configured(store, settings.store.spool_dir / "maillog", metrics,
                                    settings.store, logger=log)
    start_metrics(m.metrics_listen, metrics)
    flavor: Flavor = "sendmail" if m.format == "sendmail" else "postfix"
    parser = LineParser(flavor, kinds=KINDS, on_error=bad_line_logger(log))
    queues = Queues(m.mta_name)
    providers = frozenset(settings.metrics.providers)
    log.info("maillog_starting", path=m.path, format=m.format, state_file=str(m.state_file))
    try:
        if reading_stdin:
            journal = journal_lines(log, metrics)
            # A cursor saved by the last run: journalctl goes on after it, so do the queues.
            journal.cursor = load_cursor(m.state_file)
            if journal.cursor is not None:
                restore_queues(queues, m.state_file, log)
                log.info("maillog_journal_resume", cursor=journal.cursor,
                         state_file=str(m.state_file),
                         hint="for no entry to be missed, journalctl starts after it: "
                              + RESUME_COMMAND.format(cursor=journal.cursor))
            follow_stream(read_stream(stdin), journal, parser,  # type: ignore[arg-type]
                          queues, writer, metrics, log, m.state_file, lambda: stop[0],
                          providers=providers, more_waiting=_input_waiting)
        else:
            restore_queues(queues, m.state_file, log)
            follower = FileFollower(m.path, state_path=m.state_file,
                                    poll_interval=m.poll_interval,
                                    on_lost=warn_lost(log, "maillog_position_lost", m.path))
            follow_file(follower, parser, queues, writer, metrics, log, lambda: stop[0],
                        providers=providers)
    except _Stopped:
        pass
    finally:
        # Everything read is in the journal already; the position saved covers only
        # what was submitted, so a restart neither skips nor repeats a line.
        counts = writer.close(timeout=settings.store.stop_timeout)
        store.close()
        # Reading journalctl's output: the cursor a restart goes on after.
        resume = {"cursor": load_cursor(m.state_file)} if reading_stdin else {}
        log.info("maillog_stopped", events=counts.get("submitted", 0),
                 stored=counts.get("written", 0), left_on_disk=counts.get("on_disk", 0),
                 dropped=counts.get("dropped", 0), **resume)
    return 0
