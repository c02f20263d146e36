"""What every daemon does about stopping: the stop signals, work in flight, the stop deadline.

A neutral module: the daemons (milter, maillog, web, edge, webhooks) use it, it uses none
of them.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import deque

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def block_stop_signals() -> None:
    """Block SIGTERM/SIGINT/SIGHUP in the calling thread and, so, in every thread it starts
    from now on (a new thread inherits its creator's mask: pthread_sigmask(3)).

    The milter calls this first: libmilter's smfi_main blocks these signals in its own
    threads and takes them with sigwait(3) in a thread of its own, which then stops the
    listener and returns from smfi_main. A thread started earlier without the block (the
    store writer, the metrics server) would otherwise be where the kernel delivers
    SIGTERM, whose default action ends the process at once: no flush, no stop log.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class InFlight:
    """Counts units of work in flight (milter callbacks) so that a stop can wait for them.

    Lock-free: a deque's append and pop are atomic in CPython, and this is on every
    callback of every SMTP transaction."""

    def __init__(self) -> None:
        self._running: deque[None] = deque()
        self._finished = itertools.count()

    def enter(self) -> None:
        self._running.append(None)

    def leave(self) -> None:
        self._running.pop()
        next(self._finished)

    @property
    def count(self) -> int:
        return len(self._running)

    @property
    def finished(self) -> int:
        """How many have finished (read once, at stop: reading it counts one more)."""
        return next(self._finished)

    def wait_idle(self, timeout: float, poll: float = 0.005) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while self._running:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        return True


class Deadline:
    """One stop deadline shared by the steps of a stop."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + max(0.0, seconds)

    def left(self, floor: float = 0.5) -> float:
        """Seconds left, at least ``floor`` (each step gets a moment even when late)."""
        return max(floor, self._end - time.monotonic())
