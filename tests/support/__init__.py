"""Shared test helpers: polling with a deadline, and where the shared corpus lives."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shared folder sits beside the repository checkout (CI copies it there too).
SHARED = REPO_ROOT.parent / "shared"
CORPUS = SHARED / "corpus"
HTML_CORPUS = CORPUS / "html"
MIME_CORPUS = CORPUS / "mime"
BOUNCE_CORPUS = CORPUS / "bounces"
BENCHMARKS = REPO_ROOT / "tests" / "benchmarks"
NULLMILTER = BENCHMARKS / "nullmilter.py"


class PollTimeout(AssertionError):
    """poll() gave up; carries the last value fn returned."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


def poll(
    fn: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call `fn` until it returns something truthy and return that, or raise PollTimeout.

    The only sanctioned way for a test to wait: a deadline, never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise PollTimeout(
                f"timed out after {timeout}s waiting for {what or getattr(fn, '__name__', fn)}; "
                f"last value: {last!r}",
                last,
            )
        time.sleep(interval)
