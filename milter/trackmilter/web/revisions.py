"""Revise verdicts once a message's hits are stored: the evidence the answer could not wait
for (the delivery time, hits answered by other tracker processes) is in the database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from trackmilter.model import Event, HitRecorded
from trackmilter.store.base import Store, StoreUpkeep
from trackmilter.store.views import MessageView

# A message is revised when its hits have been quiet for SETTLE seconds (a burst is over
# and the writer has stored it), but at least every MAX_DELAY seconds while it is hammered.
SETTLE = 2.0
MAX_DELAY = 30.0


class RevisionQueue:
    """One daemon thread per tracker process. ``note`` is O(1) and never blocks on I/O."""

    def __init__(self, store: StoreUpkeep, metrics: Any, log: Any, *,
                 settle: float = SETTLE, max_delay: float = MAX_DELAY,
                 clock: Callable[[], float] = time.monotonic, start: bool = True) -> None:
        self._store = store
        self._metrics = metrics
        self._log = log
        self._settle, self._max_delay = settle, max_delay
        self._clock = clock
        self._failing = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[str, tuple[float, float]] = {}  # tid -> (first, last) note time
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trackmilter-revisions",
                                        daemon=True)
        if start:
            self._thread.start()

    def note(self, tracking_id: str) -> None:
        now = self._clock()
        with self._lock:
            first = self._pending.get(tracking_id, (now, now))[0]
            self._pending[tracking_id] = (first, now)

    def due(self) -> list[str]:
        now = self._clock()
        with self._lock:
            ready = [tid for tid, (first, last) in self._pending.items()
                     if now - last >= self._settle or now - first >= self._max_delay]
            for tid in ready:
                del self._pending[tid]
        return ready

    def run_once(self) -> int:
        """Revise every message that is due; return how many verdicts changed."""
        tids = self.due()
        if not tids:
            return 0
        try:
            # The latest hits of each message (store.hits.REVISION_WINDOW), however old:
            # hits replayed after an outage are judged too.
            changed = self._store.revise_hits(tids)
        except Exception as e:  # noqa: BLE001 - a revision may wait; the thread must not die
            if not self._failing:  # once per outage, not every pass
                self._log.warning("verdict_revision_failed", error=str(e), messages=len(tids))
            self._failing = True
            with self._lock:  # try again on a later pass
                now = self._clock()
                for tid in tids:
                    self._pending.setdefault(tid, (now, now))
            return 0
        self._failing = False
        if changed:  # counted by judging.RevisionCounter, a hook of the store
            self._log.info("verdicts_revised", messages=len(tids), changed=changed)
        return changed

    def close(self, timeout: float = 10.0) -> None:
        """A last pass for what is pending (the writer must have been flushed first)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._lock:
            for tid in self._pending:
                self._pending[tid] = (-1e18, -1e18)  # due now
        self.run_once()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(min(self._settle, 1.0))
            if self._stopping:
                return
            self.run_once()


class NotingStore:
    """The store as the writer sees it: after a batch is written (a replay from the spool
    too), its hits' messages are due for a revision — not before, when the revision would
    find nothing."""

    def __init__(self, store: Store, revisions: RevisionQueue) -> None:
        self._store = store
        self._revisions = revisions

    def write(self, events: Sequence[Event]) -> None:
        self._store.write(events)
        for tid in {e.tracking_id for e in events if isinstance(e, HitRecorded)}:
            self._revisions.note(tid)

    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]:
        return self._store.lookup(ident, limit=limit)

    def ping(self) -> None:
        self._store.ping()

    def close(self) -> None:
        self._store.close()
