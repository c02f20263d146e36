"""What every daemon does about stopping: the stop signals, work in flight, the stop deadline.

A neutral module: the daemons (milter, maillog, web, edge, webhooks) use it, it uses none
of them.
"""

from __future__ import annotations

import signal
import threading
import time

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
    """Counts units of work in flight (milter callbacks) so that a stop can wait for them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._n = 0
        self.finished = 0

    def enter(self) -> None:
        with self._cond:
            self._n += 1

    def leave(self) -> None:
        with self._cond:
            self._n = max(0, self._n - 1)
            self.finished += 1
            if self._n == 0:
                self._cond.notify_all()

    @property
    def count(self) -> int:
        return self._n

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True


class Deadline:
    """One stop deadline shared by the steps of a stop."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + max(0.0, seconds)

    def left(self, floor: float = 0.5) -> float:
        """Seconds left, at least ``floor`` (each step gets a moment even when late)."""
        return max(floor, self._end - time.monotonic())
