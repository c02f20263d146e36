"""Shared test helpers: polling with a deadline, and where the test corpus lives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from trackmilter_lab.postfix import wait_until

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
# The corpus ships with the repository (tests/corpus/README.md: sources and licences).
CORPUS = REPO_ROOT / "tests" / "corpus"
HTML_CORPUS = CORPUS / "html"
MIME_CORPUS = CORPUS / "mime"
BOUNCE_CORPUS = CORPUS / "bounces"
# Other projects' bounce corpora, with expected decodings written for trackmilter.
UNSEEN_BOUNCE_CORPORA = (
    CORPUS / "flufl-bounce", CORPUS / "bounce-email", CORPUS / "flanker", CORPUS / "mail-gem"
)
BENCHMARKS = REPO_ROOT / "tests" / "benchmarks"
NULLMILTER = BENCHMARKS / "nullmilter.py"


# The only sanctioned way for a test to wait: a deadline, never a bare sleep. One
# implementation for tests, lab and demo alike.
def poll(fn: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
         what: str = "") -> T:
    return wait_until(fn, timeout, interval, what)
