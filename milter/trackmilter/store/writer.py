"""BatchWriter: takes events from mail threads without blocking, writes them in batches, spools on failure.

Two daemon threads. The writer drains the memory queue into ``store.write``; while the
database is unavailable it appends batches to the spool and retries every
``retry_interval``, replaying the spool (oldest first) before new events once it works. The
overflow thread exists for a database that *hangs* rather than fails: the writer is then
stuck inside ``store.write``, so events past the high-water mark are spooled by a thread
that never touches the database, and memory stays bounded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from trackmilter.metrics import Metrics
from trackmilter.model import Event
from trackmilter.store.base import EventRejected, Store, StoreConfigError
from trackmilter.store.spool import Log, Spool


class BatchWriter:
    """The store's front door for daemons: ``submit`` never blocks and never raises."""

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
        # Room for bursts while the spooler fsyncs; beyond it even the disk cannot keep up.
        self._overflow_limit = overflow_limit if overflow_limit is not None else 4 * high_water
        self._clock = clock
        self._log: Log = logger if logger is not None else structlog.get_logger("trackmilter.store")
        self._spool = Spool(spool_dir, self._log)

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # writer thread waits here
        self._spooler = threading.Condition(self._lock)  # overflow thread waits here
        self._idle = threading.Condition(self._lock)  # flush() waits here
        self._queue: deque[Event] = deque()
        self._first_at = 0.0  # when the oldest queued event arrived (for flush_interval)
        self._overflow: deque[Event] = deque()
        self._in_flight: list[Event] = []  # the writer's current batch
        self._overflow_busy = 0
        self._closing = False
        self._closed = False
        self._overflowing = False  # for logging once per episode

        # Writer-thread state (read elsewhere only for information).
        self._healthy = True
        self._down_since = 0.0
        self._next_attempt = 0.0
        pending = self._spool.count()
        self._spool_wanted = pending > 0 or self._spool.pending()
        metrics.spool_events.set(pending)
        if pending:
            self._log.info("spool_found", events=pending, directory=str(spool_dir))

        self._writer = threading.Thread(target=self._run, name="trackmilter-store-writer", daemon=True)
        self._overflow_thread = threading.Thread(
            target=self._run_overflow, name="trackmilter-store-spooler", daemon=True
        )
        self._writer.start()
        self._overflow_thread.start()

    @property
    def healthy(self) -> bool:
        """Whether the last database write worked (for health checks)."""
        return self._healthy

    # -- producer side ------------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """Queue ``event``; O(1), takes one short lock, never waits on I/O, never raises."""
        try:
            with self._lock:
                if self._closed:
                    verdict = "late"
                elif len(self._queue) < self._high_water:
                    if not self._queue:
                        self._first_at = self._clock()
                    self._queue.append(event)
                    self._metrics.store_queue.set(len(self._queue))
                    if len(self._queue) == 1 or len(self._queue) >= self._max_batch:
                        self._work.notify()
                    return
                elif len(self._overflow) < self._overflow_limit:
                    self._overflow.append(event)
                    self._spooler.notify()
                    return
                else:
                    verdict = "full"
            if verdict == "late":
                # Closed: no thread drains the queue any more; the spool is all that is left.
                self._to_spool([event])
            else:
                self._metrics.store_dropped.inc()
                self._log.error("store_event_dropped", reason="queue and overflow both full")
        except Exception:  # noqa: BLE001 - mail must never break because of the store
            try:
                self._metrics.store_dropped.inc()
            except Exception:  # noqa: BLE001, S110
                pass

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is in the database or the spool."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._queue or self._overflow or self._in_flight or self._overflow_busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write or spool what is queued, stop the threads; spool leftovers if the DB hangs."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._work.notify_all()
            self._spooler.notify_all()
        deadline = time.monotonic() + timeout
        self._writer.join(max(0.0, deadline - time.monotonic()))
        self._overflow_thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._closed = True
            # A writer still inside store.write (hung database): spool its batch too.
            # It may yet commit; the replay then writes it again, which changes nothing.
            leftover = [*self._in_flight, *self._queue, *self._overflow]
            self._queue.clear()
            self._overflow.clear()
            self._metrics.store_queue.set(0)
        if leftover:
            self._log.warning("store_close_timeout", spooled=len(leftover), timeout=timeout)
            self._to_spool(leftover)
        self._spool.close()

    # -- writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                if self._replay_due():
                    self._replay()
                if batch:
                    self._write_or_spool(batch)
            except Exception as e:  # noqa: BLE001 - the writer thread must not die
                self._log.error("store_writer_error", error=repr(e))
                if batch:
                    self._to_spool(batch)
            finally:
                with self._lock:
                    self._in_flight = []
                    self._idle.notify_all()

    def _take(self) -> list[Event] | None:
        """The next batch; ``[]`` when only a replay is due; ``None`` once closed and drained."""
        with self._lock:
            while True:
                now = self._clock()
                timeout: float | None
                if self._queue:
                    lingered = now - self._first_at >= self._flush_interval
                    if self._closing or lingered or len(self._queue) >= self._max_batch:
                        n = min(self._max_batch, len(self._queue))
                        batch = [self._queue.popleft() for _ in range(n)]
                        self._in_flight = batch
                        self._metrics.store_queue.set(len(self._queue))
                        return batch
                    timeout = self._first_at + self._flush_interval - now
                elif self._closing:
                    return None
                elif self._spool_wanted and (self._healthy or now >= self._next_attempt):
                    return []
                elif self._spool_wanted:
                    timeout = self._next_attempt - now
                else:
                    timeout = None
                # Bounded so that an injected clock that is not wall time still gets looked at.
                self._work.wait(None if timeout is None else min(max(timeout, 0.001), 1.0))

    def _replay_due(self) -> bool:
        with self._lock:
            due = self._spool_wanted and (self._healthy or self._clock() >= self._next_attempt)
            if due and not self._closing:
                self._spool_wanted = False  # an append during the replay sets it again
                return True
            return False

    def _replay(self) -> None:
        try:
            replayed = self._spool.replay(self._write_replayed, self._max_batch)
        except Exception as e:  # noqa: BLE001 - StoreError, OSError: all mean "later"
            with self._lock:
                self._spool_wanted = True
            self._mark_down(e)
            return
        self._metrics.spool_events.set(self._spool.count())
        self._mark_up(replayed)

    def _write_replayed(self, batch: list[Event]) -> None:
        self._write(batch)
        self._metrics.spool_replayed.inc(len(batch))
        self._metrics.spool_events.dec(len(batch))

    def _write_or_spool(self, batch: list[Event]) -> None:
        if not self._healthy and self._clock() < self._next_attempt:
            self._to_spool(batch)  # keep order: nothing new reaches the DB before the spool
            return
        try:
            self._write(batch)
        except Exception as e:  # noqa: BLE001 - whatever it is, the spool keeps the events
            self._mark_down(e)
            self._to_spool(batch)
            return
        self._mark_up(0)

    def _write(self, batch: Sequence[Event]) -> None:
        """``store.write``, isolating events the database refuses as data into the .bad file."""
        start = time.perf_counter()
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
            return
        except Exception:
            self._metrics.store_failures.inc()
            raise
        self._metrics.store_batch_seconds.observe(time.perf_counter() - start)
        self._metrics.store_written.inc(len(batch))

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

    # -- spooling -----------------------------------------------------------------------

    def _to_spool(self, events: Sequence[Event]) -> None:
        try:
            self._spool.append(events)
        except OSError as e:
            self._metrics.store_dropped.inc(len(events))
            self._log.error("spool_write_failed", error=str(e), dropped=len(events),
                            directory=str(self._spool.directory))
            return
        self._metrics.spool_events.inc(len(events))
        with self._lock:
            self._spool_wanted = True

    def _run_overflow(self) -> None:
        while True:
            with self._lock:
                while not self._overflow and not self._closing:
                    self._spooler.wait()
                if not self._overflow:
                    return
                batch = list(self._overflow)
                self._overflow.clear()
                self._overflow_busy = len(batch)
            if not self._overflowing:
                self._overflowing = True
                self._log.warning("store_queue_overflow", high_water=self._high_water,
                                  action="spooling directly")
            try:
                self._to_spool(batch)
            finally:
                with self._lock:
                    self._overflow_busy = 0
                    if not self._overflow:
                        self._overflowing = False
                    self._idle.notify_all()
