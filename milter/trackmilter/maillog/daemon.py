"""`trackmilter maillog`: follow the MTA's log and store what the next hop said per recipient."""

from __future__ import annotations

import ipaddress
import signal
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime
from types import FrameType
from typing import Protocol, TypeVar

from trackmilter.config import Settings
from trackmilter.logging import get_logger
from trackmilter.maillog.follow import FileFollower, read_stream
from trackmilter.maillog.parse import LineParser
from trackmilter.maillog.records import Delivery, Flavor, LogRecord, MessageExpired, MessageRemoved
from trackmilter.metrics import Metrics
from trackmilter.model import DeliveryObserved, DeliveryStatus, Event

# Queue ids remembered for re-injection chains and for deferred recipients; the oldest
# are forgotten first, so memory stays bounded whatever the log holds.
MAX_REMEMBERED = 100_000

KINDS = frozenset({Delivery, MessageExpired, MessageRemoved})
V = TypeVar("V")


class _Stopped(Exception):
    """SIGTERM/SIGINT while blocked reading standard input."""


class Sink(Protocol):
    def submit(self, event: Event) -> None: ...


def _loopback(relay: str) -> bool:
    """`127.0.0.1[127.0.0.1]:10025`, `localhost[::1]:10025` -> True."""
    inside = relay.partition("[")[2].partition("]")[0]
    # String tests first: ipaddress costs more than the rest of the line's handling.
    if inside.startswith("127."):
        return True
    if ":" not in inside:
        return False
    try:
        return ipaddress.ip_address(inside).is_loopback
    except ValueError:
        return False


class Tracker:
    """Turns log records into per-recipient events, with the state the log spreads over
    several lines: re-injection chains and recipients still waiting for a retry.

    - A content filter hands mail back as a new queue id (`250 2.0.0 Ok: queued as NEW`
      from a loopback relay): deliveries under NEW belong to the queue id the milter saw.
    - Postfix 3.7 logs `status=expired, returned to sender` once per message, not per
      recipient: the recipients whose last attempt was deferred are the expired ones.
    """

    def __init__(self, mta: str, limit: int = MAX_REMEMBERED) -> None:
        self.mta = mta
        self._limit = limit
        self._origin: OrderedDict[str, str] = OrderedDict()
        self._deferred: OrderedDict[str, dict[str, Delivery]] = OrderedDict()

    def events(self, record: LogRecord) -> Iterator[DeliveryObserved]:
        if isinstance(record, Delivery):
            yield from self._delivery(record)
        elif isinstance(record, MessageExpired):
            yield from self._expired(record)
        elif isinstance(record, MessageRemoved):
            self._deferred.pop(record.queue_id, None)

    def origin(self, queue_id: str) -> str:
        return self._origin.get(queue_id, queue_id)

    def _delivery(self, d: Delivery) -> Iterator[DeliveryObserved]:
        new = d.queued_as
        if new is not None and _loopback(d.relay):
            self._remember(self._origin, new, self.origin(d.queue_id))
        waiting = self._deferred.get(d.queue_id)
        for rcpt in d.recipients:
            if d.status is DeliveryStatus.DEFERRED:
                if waiting is None:
                    waiting = {}
                    self._remember(self._deferred, d.queue_id, waiting)
                waiting[rcpt] = d
            elif waiting is not None:
                waiting.pop(rcpt, None)
            yield self._event(d, rcpt, d.status, d.dsn, d.reply, d.time)

    def _expired(self, e: MessageExpired) -> Iterator[DeliveryObserved]:
        for rcpt, last in self._deferred.pop(e.queue_id, {}).items():
            # The last deferral's reply is the reason it never went through.
            yield self._event(last, rcpt, DeliveryStatus.EXPIRED, last.dsn, last.reply, e.time)

    def _event(self, d: Delivery, rcpt: str, status: DeliveryStatus, dsn: str, text: str,
               at: datetime) -> DeliveryObserved:
        return DeliveryObserved(
            queue_id=self.origin(d.queue_id), recipient=rcpt, status=status, at=at, dsn=dsn,
            relay=d.relay, text=text, orig_to=d.orig_to or "", mta=self.mta,
        )

    def _remember(self, table: OrderedDict[str, V], key: str, value: V) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > self._limit:
            table.popitem(last=False)


def consume(block: str, parser: LineParser, tracker: Tracker, sink: Sink,
            metrics: Metrics) -> int:
    """Parse a block of whole lines and submit the events it holds; return how many."""
    metrics.maillog_lines.inc(block.count("\n"))
    counts: Counter[str] = Counter()
    submit = sink.submit
    outcome_lines = 0
    for record in parser.scan(block):
        if isinstance(record, (Delivery, MessageExpired)):
            outcome_lines += 1
        for ev in tracker.events(record):
            counts[ev.status] += 1
            submit(ev)
    for status, n in counts.items():  # once per block, not per line
        metrics.child(metrics.maillog_deliveries, str(status)).inc(n)
    # Every outcome line carries "status=" (Postfix) or "stat=" (Sendmail): those that
    # gave no record are malformed or of a shape we do not know; counted, never fatal.
    if parser.flavor == "sendmail":  # "stat=queued" is an arrival, not an outcome
        looks = block.count(" stat=") - block.count(" stat=queued")
    else:
        looks = block.count(" status=")
    metrics.maillog_unparsed.inc(max(0, looks - outcome_lines))
    return sum(counts.values())


def _blocks(settings: Settings, stop: list[bool]) -> Iterable[str]:
    m = settings.maillog
    if m.path == "-":
        return read_stream(sys.stdin.buffer)  # type: ignore[arg-type]
    follower = FileFollower(m.path, state_path=m.state_file, poll_interval=m.poll_interval)
    return follower.follow(lambda: stop[0])


def run(settings: Settings) -> int:
    """Follow until SIGTERM/SIGINT (or the end of standard input); flush before exiting."""
    from trackmilter.mta.runner import start_metrics
    from trackmilter.store import SQLStore
    from trackmilter.store.writer import BatchWriter

    m = settings.maillog
    log = get_logger(component="maillog")
    metrics = Metrics()
    store = SQLStore(settings.database.url)
    s = settings.store
    # Its own spool directory: two processes must never append to the same segments.
    writer = BatchWriter(store, s.spool_dir / "maillog", metrics, max_batch=s.batch_size,
                         flush_interval=s.flush_interval, retry_interval=s.retry_interval,
                         logger=log)
    start_metrics(m.metrics_listen, metrics)
    stop = [False]
    reading_stdin = m.path == "-"

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop[0] = True
        if reading_stdin:
            # A read from a pipe is resumed after a signal (PEP 475): interrupt it.
            raise _Stopped

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    flavor: Flavor = "sendmail" if m.format == "sendmail" else "postfix"
    parser = LineParser(flavor, kinds=KINDS)
    tracker = Tracker(m.mta_name)
    log.info("maillog_starting", path=m.path, format=m.format, state_file=str(m.state_file))
    try:
        for block in _blocks(settings, stop):
            consume(block, parser, tracker, writer, metrics)
            # The follower saves its position when asked for the next block: what this
            # block said must be in the database or the spool first.
            writer.flush(timeout=30.0)
    except _Stopped:
        pass
    finally:
        writer.close(timeout=10.0)
        store.close()
        log.info("maillog_stopped")
    return 0
