"""A budget for message bytes in flight: what buffered bodies and their rewriting may cost.

Every session reserves, as each body chunk arrives, what that chunk will cost until end of
message: the chunk itself, the copies the milter and the rewrite engine make of it, and the
objects made for each link. The sum over all sessions stays within ``[milter]
memory_budget``, so the milter's memory is bounded by it (plus a fixed base), whatever the
number and size of the messages in flight.

A chunk that does not fit waits (at most ``[milter] memory_wait`` seconds in all, per
message) for others to finish; then the message stops being buffered and passes
unmodified (skip reason ``busy``). A message whose reservation alone would exceed the whole
budget gives up at once. When every message holding a reservation waits for more and none
of them fits, waiting cannot help: the youngest of them gives up at once, so the oldest
complete. Room is granted oldest message first among those that fit.

The costs, fitted to tests/benchmarks/bench_memory.py (tracemalloc peak of a whole
transaction through the Session: 10 MB bodies, a link every 120 to 2,000 bytes of HTML):

=================  =======================  ============
HTML part          per body byte            per link
=================  =======================  ============
8bit               ~6.2                     ~0.8 KB
quoted-printable   ~6.1                     ~1.1 KB
base64             ~9.0 (of encoded bytes)  ~1.2 KB
=================  =======================  ============

so 6.5 to 15.5 times the body in all. Where a body's bytes go: the chunks as received
(1x), their join for the engine (1x), the engine's copy of the part (1x), its decoded text
(1x), the edited text (pieces, then their join: 2x), its re-encoding (1x; base64 also a
list of 76-byte line slices, 1.5x more), the new body (pieces, then their join: 1-2x).
Links: the scanner's spans, an edit tuple holding the tracking URL, a Link (URL str, raw
bytes) and the milter's LinkRecord. tracemalloc does not see malloc's own overhead and
fragmentation; the margins below cover it, and tune_malloc keeps fragmentation down (the
integration test measures the process's peak RSS). Attachments are reserved at the same
rate though the engine never decodes them (they cost ~4x): a reservation is a bound, not
an estimate.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trackmilter.metrics import Metrics

__all__ = ["LINK_COST", "REPORT_FACTOR", "REWRITE_FACTOR", "Budget", "Reservation",
           "link_marks", "report_cost", "rewrite_cost", "tune_malloc"]

# Per body byte of a message that may be rewritten (the worst measured, base64, ~9.0, with
# a margin for malloc's overhead; a reservation is 1.4 to 2.3 times the measured peak).
REWRITE_FACTOR = 12
# Per link seen in the raw body (measured up to ~1.2 KB, with the same margin).
LINK_COST = 2048
# Per body byte of a message buffered only to decode a report: the chunks, their join and
# the raw message (header + body) handed to the decoder's queue.
REPORT_FACTOR = 3
# "://" as written (7bit, 8bit, quoted-printable) and in base64 at each of its three
# alignments: how links show in a raw body before any decoding. A base64 line break inside
# the pattern, or a charset like UTF-16, hides a link: the byte factor's margin covers it.
_LINK_MARKS = (b"://", b"Oi8v", b"ovL", b"6Ly")


def link_marks(chunk: bytes) -> int:
    """How many links `chunk` seems to hold (each a few bytes.count scans, no copies)."""
    return sum(chunk.count(mark) for mark in _LINK_MARKS)


def rewrite_cost(chunk: bytes) -> int:
    """Bytes to reserve for a chunk of a message that may be rewritten."""
    return REWRITE_FACTOR * len(chunk) + LINK_COST * link_marks(chunk)


def report_cost(chunk: bytes) -> int:
    """Bytes to reserve for a chunk of a message buffered only to decode a report."""
    return REPORT_FACTOR * len(chunk)


# glibc's mallopt parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2
_tuned = False


def tune_malloc() -> bool:
    """Make freed bodies go back to the system, so that the process's RSS follows the budget.

    glibc serves a block of 128 KiB or more with its own mmap, unmapped when freed; but
    freeing one raises that threshold to the block's size (up to 32 MiB), so after the
    first big message the next bodies come from heaps, one per thread, that keep what was
    freed in them. Measured (tests/integration/test_memory_budget.py's load, 512 MiB budget,
    four rounds): peak RSS grew 367, 443, 556, 556 MiB; with the threshold fixed at 128 KiB
    and two heaps, 309, 315, 318, 318 MiB. An operator's MALLOC_MMAP_THRESHOLD_ or
    MALLOC_ARENA_MAX in the environment wins. Once per process; False when not glibc.
    """
    global _tuned
    if _tuned:
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, ARENA_MAX)
    _tuned = True
    return True


class Reservation:
    """One message's share of the budget; used by one session at a time."""

    __slots__ = ("_budget", "order", "held", "need", "waited", "refused")

    def __init__(self, budget: Budget, order: int) -> None:
        self._budget = budget
        self.order = order  # lower: older, served first
        self.held = 0
        self.need = 0  # what it waits for (while it waits)
        self.waited = 0.0  # seconds waited so far, for this message in all
        self.refused = False  # gave up (or was told to): takes nothing more

    def take(self, n: int) -> bool:
        """Add `n` bytes, waiting for room if need be; False when they cannot be had (the
        caller then drops what it buffered and calls release)."""
        return self._budget._take(self, n)

    def release(self) -> None:
        """Give back everything held (idempotent; the reservation may take again only if
        it was not refused)."""
        if self.held:  # only this session changes it: nothing held, no lock to take
            self._budget._release(self)


class Budget:
    """Bytes reserved by all messages in flight; thread-safe (libmilter's threads share it).

    `limit` 0: no limit (reservations are still counted, for the gauge). `wait`: the most
    a message waits for room, in all, before it gives up.
    """

    def __init__(self, limit: int, wait: float, *, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 0 or wait < 0:
            raise ValueError("limit and wait must not be negative")
        self.limit = limit
        self.wait = wait
        self._metrics = metrics
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._used = 0
        self._holders = 0  # reservations holding more than 0
        self._waiting: list[Reservation] = []
        self._next = 0
        if metrics is not None:
            metrics.memory_budget.set(limit)
            metrics.memory_reserved.set(0)

    @property
    def in_flight(self) -> int:
        """Bytes reserved now."""
        with self._cond:
            return self._used

    def reservation(self) -> Reservation:
        with self._cond:
            self._next += 1
            return Reservation(self, self._next)

    # --- internals (called with a Reservation) ---

    def _take(self, r: Reservation, n: int) -> bool:
        if n <= 0:
            return not r.refused
        with self._cond:
            if r.refused:
                return False
            if self.limit and r.held + n > self.limit:
                r.refused = True  # more than the whole budget: waiting cannot help
                return False
            if not self.limit or (self._fits(n) and not self._older_fits(r)):
                self._grant(r, n)
                return True
            if self.wait <= r.waited:
                r.refused = True
                return False
            return self._wait_for(r, n)

    def _wait_for(self, r: Reservation, n: int) -> bool:
        if self._metrics is not None:
            self._metrics.memory_waits.inc()
        start = self._clock()
        deadline = start + self.wait - r.waited
        r.need = n
        self._waiting.append(r)
        try:
            while True:
                self._break_deadlock()
                if r.refused:
                    return False
                if self._fits(n) and not self._older_fits(r):
                    self._grant(r, n)
                    return True
                remaining = deadline - self._clock()
                if remaining <= 0:
                    r.refused = True
                    return False
                self._cond.wait(remaining)
        finally:
            self._waiting.remove(r)
            r.need = 0
            r.waited += self._clock() - start
            # Who waits changed: another waiter may now be the oldest that fits, or be stuck.
            self._cond.notify_all()

    def _fits(self, n: int) -> bool:
        return self._used + n <= self.limit

    def _older_fits(self, r: Reservation) -> bool:
        return any(w.order < r.order and not w.refused and self._fits(w.need)
                   for w in self._waiting)

    def _break_deadlock(self) -> None:
        """When every holder waits and no waiter fits, nothing will ever be released: tell
        the youngest waiting holder to give up (one at a time: it releases when it wakes)."""
        waiting = self._waiting
        if any(w.refused for w in waiting):
            return  # a victim is on its way out
        holders_waiting = [w for w in waiting if w.held > 0]
        if len(holders_waiting) < self._holders or any(self._fits(w.need) for w in waiting):
            return
        if holders_waiting:
            victim = max(holders_waiting, key=lambda w: w.order)
            victim.refused = True
            self._cond.notify_all()

    def _grant(self, r: Reservation, n: int) -> None:
        if r.held == 0:
            self._holders += 1
        r.held += n
        self._used += n
        if self._metrics is not None:
            self._metrics.memory_reserved.set(self._used)

    def _release(self, r: Reservation) -> None:
        with self._cond:
            if r.held == 0:
                return
            self._used -= r.held
            self._holders -= 1
            r.held = 0
            if self._metrics is not None:
                self._metrics.memory_reserved.set(self._used)
            self._cond.notify_all()
