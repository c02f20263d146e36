"""BatchWriter: journals every event before ``submit`` returns, stores them in batches.

``submit`` (a mail thread, a request handler, the log follower) appends the event to this
process's journal (``store.journal``: one ``write(2)``, on disk for any crash of the
process) and queues it in memory. The writer thread stores queued events in batches and
tells the journal how far it got; a stored segment is deleted.

When the database fails, when the memory queue is full (a database that hangs), or on stop,
the writer *hands over*: the journal's segments become spool segments, replayed (oldest
first, from their first unstored line) every ``retry_interval`` until the database takes
them, and their events leave memory. So memory stays bounded and nothing waits in memory
alone. A write that takes longer than ``write_timeout`` is reported (``store_unavailable``,
``trackmilter_store_stalls_total``) and interrupted when the store can (``interrupt``:
PostgreSQL's socket is shut, SQLite's statement interrupted), so that a frozen database
never holds the writer. Only when the journal itself cannot be written (a full disk) does an
event wait in memory, bounded, until the journal or the database takes it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from trackmilter.metrics import Metrics
from trackmilter.model import Event
from trackmilter.store.base import EventRejected, Store, StoreConfigError
from trackmilter.store.journal import DEFAULT_SEGMENT_BYTES, Journal, Segment
from trackmilter.store.spool import Log, Spool, encode

# (event, its journal segment or None when the journal could not take it, offset after it)
_Entry = tuple[Event, Segment | None, int]

DEFAULT_WRITE_TIMEOUT = 30.0
# On close, how long a write in progress may go on before it is interrupted (seconds).
_CLOSE_PATIENCE = 2.0


class WriterSettings(Protocol):
    """The [store] settings a writer takes (config.StoreSettings)."""

    @property
    def batch_size(self) -> int: ...
    @property
    def flush_interval(self) -> float: ...
    @property
    def retry_interval(self) -> float: ...
    @property
    def write_timeout(self) -> float: ...


class BatchWriter:
    """The store's front door for daemons: ``submit`` never waits on the database and never raises."""

    def __init__(
        self,
        store: Store,
        spool_dir: Path,
        metrics: Metrics,
        *,
        max_batch: int = 500,
        flush_interval: float = 0.2,
        retry_interval: float = 5.0,
        high_water: int = 10_000,
        overflow_limit: int | None = None,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        clock: Callable[[], float] = time.monotonic,
        logger: Log | None = None,
    ) -> None:
        if max_batch < 1 or high_water < 1:
            raise StoreConfigError(f"max_batch ({max_batch}) and high_water ({high_water}) must be ≥ 1")
        try:
            spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreConfigError(f"cannot create spool directory {spool_dir}: {e}") from e
        self._store = store
        self._metrics = metrics
        self._max_batch = max_batch
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._high_water = high_water
        # Events the journal could not take (a full disk) kept in memory, at most this many.
        self._unjournaled_limit = overflow_limit if overflow_limit is not None else 4 * high_water
        self._write_timeout = write_timeout
        self._clock = clock
        self._log: Log = logger if logger is not None else structlog.get_logger("trackmilter.store")
        self._spool = Spool(spool_dir, self._log)
        self._journal = Journal(self._spool, segment_bytes)

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # writer thread waits here
        self._idle = threading.Condition(self._lock)  # flush() waits here
        self._queue: deque[_Entry] = deque()
        self._first_at = 0.0  # when the oldest queued event arrived (for flush_interval)
        self._in_flight: list[_Entry] = []  # the writer's current batch
        self._held: list[Event] = []  # taken from the queue, neither journaled nor stored
        self._behind = False  # journaled events were not queued: hand over, replay them
        self._gap = False  # journaled events left memory unstored: hand over before writing
        self._closing = False
        self._closed = False
        self._journal_failing = False  # for logging once per episode
        self._overflowing = False

        # Writer-thread state (read elsewhere only for information).
        self._healthy = True
        self._down_since = 0.0
        self._next_attempt = 0.0
        self._write_started: float | None = None  # time.monotonic() when store.write began
        self._stalled = False
        self.counts = {"submitted": 0, "written": 0, "handed_over": 0, "dropped": 0}
        pending = self._spool.count()
        self._spool_wanted = pending > 0 or self._spool.pending()
        metrics.spool_events.set(pending)
        if pending:
            self._log.info("spool_found", events=pending, directory=str(spool_dir))

        self._writer = threading.Thread(target=self._run, name="trackmilter-store-writer", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="trackmilter-store-watchdog",
                                          daemon=True)
        self._writer.start()
        self._watchdog.start()

    @classmethod
    def configured(cls, store: Store, spool_dir: Path, metrics: Metrics, s: WriterSettings,
                   *, logger: Log | None = None) -> BatchWriter:
        """A writer with a daemon's [store] settings."""
        return cls(store, spool_dir, metrics, max_batch=s.batch_size,
                   flush_interval=s.flush_interval, retry_interval=s.retry_interval,
                   write_timeout=s.write_timeout, logger=logger)

    @property
    def healthy(self) -> bool:
        """Whether the last database write worked and none is stalled (for health checks)."""
        return self._healthy and not self._stalled

    # -- producer side ------------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """Journal and queue ``event``: one short lock and one ``write(2)``; never raises.

        When it returns, the event survives a crash of this process."""
        try:
            line = encode(event)
            with self._lock:
                self.counts["submitted"] += 1
                if self._closed:
                    late = True
                else:
                    late = False
                    self._submit_locked(event, line)
            if late:
                # Closed: no writer any more; the spool is all that is left.
                self._spool_or_drop([event], "late")
        except Exception as e:  # noqa: BLE001 - mail must never break because of the store
            try:
                with self._lock:
                    # It may be in the journal without being queued: a hand-over from the
                    # first unstored line then replays it rather than skip it.
                    self._behind = True
                    self._work.notify()
                self._log.error("store_submit_failed", error=repr(e),
                                action="replayed from the journal if it was written")
            except Exception:  # noqa: BLE001, S110
                pass

    def _submit_locked(self, event: Event, line: bytes) -> None:
        seg: Segment | None = None
        end = 0
        try:
            seg, end = self._journal.append(line)
        except OSError as e:  # the journal cannot take it: it waits in memory (below)
            self._metrics.journal_failures.inc()
            if not self._journal_failing:
                self._journal_failing = True
                self._log.error("journal_write_failed", error=str(e),
                                directory=str(self._spool.directory),
                                action="kept in memory until the journal or the database takes it")
        else:
            if self._journal_failing:
                self._journal_failing = False
                try:
                    self._log.info("journal_write_recovered")
                except Exception:  # noqa: BLE001 - on disk already: it must reach the queue
                    pass
        if seg is not None and (self._behind or len(self._queue) >= self._high_water):
            # On disk already: the writer hands over and the replay reads it from there.
            if not self._behind:
                self._behind = True
                self._work.notify()
                if not self._overflowing:
                    self._overflowing = True
                    self._log.warning("store_queue_overflow", high_water=self._high_water,
                                      action="events wait in the journal on disk")
            return
        if seg is None and len(self._queue) + len(self._held) >= self._high_water + self._unjournaled_limit:
            self.counts["dropped"] += 1
            self._metrics.store_dropped.inc()
            self._log.error("store_event_dropped",
                            reason="journal unwritable and memory queue full")
            return
        if not self._queue:
            self._first_at = self._clock()
        self._queue.append((event, seg, end))
        self._metrics.store_queue.set(len(self._queue))
        if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
            self._work.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is in the database or handed to the spool."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._queue or self._in_flight or self._behind:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._work.notify()
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> dict[str, int]:
        """Store what is queued within ``timeout``; what is not, stays on disk for the next
        start (the journal handed to the spool). Returns the counts, for the stop log."""
        with self._lock:
            if self._closing:
                return dict(self.counts)
            self._closing = True
            self._work.notify_all()
        deadline = time.monotonic() + timeout
        interrupted_at: float | None = None
        while self._writer.is_alive() and time.monotonic() < deadline:
            self._writer.join(min(0.1, max(0.0, deadline - time.monotonic())))
            started = self._write_started
            now = time.monotonic()
            # Stopping is no time to wait out a database that does not answer: everything
            # is in the journal, so a write older than a moment is interrupted, and a writer
            # that still does not come back (libpq opening a connection to a server that
            # does not answer waits out its connect_timeout, which no interrupt reaches)
            # is left behind a second later: its events are in the journal.
            if interrupted_at is None and started is not None and now - started > _CLOSE_PATIENCE:
                interrupted_at = now
                self._interrupt("close")
            elif interrupted_at is not None and now - interrupted_at > 1.0:
                break
        if self._writer.is_alive() and interrupted_at is None:
            self._interrupt("close")
            self._writer.join(1.0)
        with self._lock:
            self._closed = True
            self._behind = self._gap = False
            queued = len(self._queue) + len(self._in_flight)
            held = self._held + [e for e, seg, _ in (*self._in_flight, *self._queue) if seg is None]
            self._held = []
            self._queue.clear()
            self._metrics.store_queue.set(0)
            segs = self._journal.close()
        left = self._journal.release(segs)
        if held:
            self._spool_or_drop(held, "close")
        if queued or left:
            self._log.warning("store_close_left_on_disk", events=left + len(held),
                              timeout=timeout, directory=str(self._spool.directory))
        self.counts["on_disk"] = left + len(held)
        self._metrics.spool_events.inc(left)
        self._spool.close()
        return dict(self.counts)

    # -- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._step(batch)
            except Exception as e:  # noqa: BLE001 - the writer thread must not die
                self._log.error("store_writer_error", error=repr(e))
                self._drop(batch)
            finally:
                with self._lock:
                    self._in_flight = []
                    self._idle.notify_all()

    def _take(self) -> list[_Entry] | None:
        """The next batch; ``[]`` when only a hand-over or replay is due; ``None`` once closed."""
        with self._lock:
            while True:
                now = self._clock()
                timeout: float | None
                if self._behind and not self._closing:
                    return []
                if self._queue:
                    lingered = now - self._first_at >= self._flush_interval
                    if self._closing or lingered or len(self._queue) >= self._max_batch:
                        n = min(self._max_batch, len(self._queue))
                        batch = [self._queue.popleft() for _ in range(n)]
                        if self._queue:
                            self._first_at = now
                        self._in_flight = batch
                        self._metrics.store_queue.set(len(self._queue))
                        return batch
                    timeout = self._first_at + self._flush_interval - now
                elif self._closing:
                    return None
                elif self._retry_wanted() and (self._healthy or now >= self._next_attempt):
                    return []
                elif self._retry_wanted():
                    timeout = self._next_attempt - now
                else:
                    timeout = None
                # Bounded so that an injected clock that is not wall time still gets looked at.
                self._work.wait(None if timeout is None else min(max(timeout, 0.001), 1.0))

    def _retry_wanted(self) -> bool:
        return self._spool_wanted or self._gap or bool(self._held)

    def _step(self, batch: list[_Entry]) -> None:
        if self._behind:
            # Journaled events were left out of memory: hand over now, whatever the
            # database's state (a hand-over needs none), so that memory drains and the
            # writer waits for the next retry instead of coming straight back here.
            self._drop(batch)
            batch = []
            self._hand_over()
        due = self._retry_due()
        if due or self._gap or not self._healthy:
            # Down, or events wait on disk: keep the order — nothing new reaches the
            # database from memory before them. This batch is journaled too.
            self._drop(batch)
            if due or (self._gap and self._healthy and not self._closing):
                self._retry()
            return
        if not batch:
            return
        try:
            self._write([e for e, _, _ in batch])
        except Exception as e:  # noqa: BLE001 - whatever it is, the journal keeps the events
            self._mark_down(e)
            self._drop(batch)
            return
        self._stored(batch)
        self._mark_up(0)

    def _stored(self, batch: Sequence[_Entry]) -> None:
        for _, seg, end in batch:
            if seg is not None:
                self._journal.stored(seg, end)
        with self._lock:
            if self._journal.rotate_due():
                self._journal.seal()
            self._journal.collect()

    def _drop(self, batch: Sequence[_Entry]) -> None:
        """Let a batch go from memory: journaled events wait on disk (a gap the next
        hand-over gives to the replay), the others in ``_held``."""
        if not batch:
            return
        with self._lock:
            for event, seg, _ in batch:
                if seg is None:
                    self._held.append(event)
                else:
                    self._gap = True

    def _hand_over(self) -> int:
        """Give everything journaled to the spool's replay and drop it from memory. The
        segments are detached under the lock together with the queue: no event is both
        replayed from disk and written from memory, or written out of order."""
        with self._lock:
            self._held.extend(e for e, seg, _ in self._queue if seg is None)
            self._queue.clear()
            self._metrics.store_queue.set(0)
            segs = self._journal.detach()
            behind, self._behind = self._behind, False
            self._gap = False
        handed = self._journal.release(segs)
        if handed:
            self.counts["handed_over"] += handed
            self._metrics.spool_events.inc(handed)
            with self._lock:
                self._spool_wanted = True
        if not behind:
            self._overflowing = False
        return handed

    def _retry_due(self) -> bool:
        with self._lock:
            due = self._retry_wanted() and (self._healthy or self._clock() >= self._next_attempt)
            if due and not self._closing:
                self._spool_wanted = False  # a hand-over during the replay sets it again
                return True
            return False

    def _retry(self) -> None:
        """Held events into the journal if it works again; hand over; replay the spool
        (oldest first); then held events the journal still cannot take, straight in."""
        self._journal_held()
        try:
            self._hand_over()
            replayed = self._spool.replay(self._write_replayed, self._max_batch)
            while True:
                with self._lock:
                    chunk = self._held[:self._max_batch]
                if not chunk:
                    break
                self._write(chunk)
                with self._lock:
                    del self._held[:len(chunk)]
        except Exception as e:  # noqa: BLE001 - StoreError, OSError: all mean "later"
            with self._lock:
                self._spool_wanted = True
            self._mark_down(e)
            return
        self._mark_up(replayed)

    def _journal_held(self) -> None:
        """Journal events held in memory (the journal failed before), a chunk at a time:
        encoded outside the lock, the lock held only for the appends, so that submit never
        waits long behind it."""
        while True:
            with self._lock:
                chunk = self._held[:100]
            if not chunk:
                return
            lines = [encode(e) for e in chunk]
            with self._lock:
                done = 0
                for line in lines:
                    try:
                        self._journal.append(line)
                    except OSError:
                        break
                    done += 1
                del self._held[:done]
            if done < len(lines):
                return  # the disk is still full: they stay held

    def _write_replayed(self, batch: list[Event]) -> None:
        self._write(batch)
        self._metrics.spool_replayed.inc(len(batch))
        self._metrics.spool_events.dec(len(batch))

    def _write(self, batch: Sequence[Event]) -> None:
        """``store.write`` under the watchdog, isolating events the database refuses as data
        into the .bad file."""
        start = time.perf_counter()
        self._write_started = time.monotonic()
        try:
            self._store.write(batch)
        except EventRejected:
            self._metrics.store_failures.inc()
            for event in batch:  # one by one: only the culprits are set aside
                try:
                    self._store.write([event])
                except EventRejected as e:
                    self._spool.reject([event], str(e))
                    continue
                self._metrics.store_written.inc()
                self.counts["written"] += 1
            return
        except Exception:
            self._metrics.store_failures.inc()
            raise
        finally:
            self._write_started = None
            self._stalled = False
        self._metrics.store_batch_seconds.observe(time.perf_counter() - start)
        self._metrics.store_written.inc(len(batch))
        self.counts["written"] += len(batch)

    def _mark_down(self, error: Exception) -> None:
        now = self._clock()
        if self._healthy:
            self._down_since = now
            self._log.error("store_unavailable", error=str(error), error_type=type(error).__name__,
                            retry_in=self._retry_interval)
        self._healthy = False
        self._next_attempt = now + self._retry_interval

    def _mark_up(self, replayed: int) -> None:
        if not self._healthy:
            self._log.info("store_recovered", replayed=replayed,
                           down_seconds=round(self._clock() - self._down_since, 3))
        elif replayed:
            self._log.info("spool_replayed", events=replayed)
        self._healthy = True

    # -- watchdog -----------------------------------------------------------------------

    def _watch(self) -> None:
        """A write past ``write_timeout`` is a stalled store: say so, count it, interrupt it."""
        if self._write_timeout <= 0:
            return
        tick = min(1.0, self._write_timeout / 4)
        while self._writer.is_alive():
            self._writer.join(tick)
            started = self._write_started
            if started is None or self._stalled:
                continue
            if time.monotonic() - started >= self._write_timeout:
                self._stalled = True
                self._metrics.store_stalls.inc()
                self._log.error("store_unavailable", error_type="WriteTimeout",
                                error=f"a write took more than {self._write_timeout:g}s",
                                action="interrupting it; events wait in the journal")
                self._interrupt("timeout")

    def _interrupt(self, why: str) -> None:
        interrupt = getattr(self._store, "interrupt", None)
        if interrupt is None:
            return
        try:
            interrupt()
        except Exception as e:  # noqa: BLE001 - best effort: the journal has the events
            self._log.warning("store_interrupt_failed", error=repr(e), why=why)

    # -- the spool as a last resort -----------------------------------------------------

    def _spool_or_drop(self, events: Sequence[Event], why: str) -> None:
        try:
            self._spool.append(events)
        except OSError as e:
            self.counts["dropped"] += len(events)
            self._metrics.store_dropped.inc(len(events))
            self._log.error("spool_write_failed", error=str(e), dropped=len(events), why=why,
                            directory=str(self._spool.directory))
            return
        self._metrics.spool_events.inc(len(events))
