"""A signer that follows its key file: a rotated key is used within a second, no restart.

The milter cannot be told by SIGHUP: libmilter's signal thread takes SIGHUP as "stop"
(libmilter/signal.c, mi_signal_thread), so the milter looks at the file instead, at most
once a second, when it signs. A file that no longer reads (a half-written edit, a key too
short) keeps the keys in use and is logged once, until it reads again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trackmilter.tokens import KeyFileError, MessageSigner, Signer

CHECK_EVERY = 1.0  # seconds


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (inode, size, mtime); None: gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class WatchedSigner:
    """Signs with the keys of `path` as they are now (the first signs, all verify)."""

    def __init__(self, path: Path, log: Any, *, clock: Callable[[], float] = time.monotonic,
                 check_every: float = CHECK_EVERY) -> None:
        self._path, self._log, self._clock, self._every = path, log, clock, check_every
        self._signer = Signer.from_file(path)  # KeyFileError: the daemon does not start
        self._seen = file_stamp(path)
        self._checked = clock()
        self._failing = False
        self._lock = threading.Lock()

    def current(self) -> Signer:
        now = self._clock()
        if now - self._checked < self._every:
            return self._signer
        with self._lock:
            if now - self._checked >= self._every:
                self._checked = now
                stamp = file_stamp(self._path)
                if stamp != self._seen:
                    self._reload(stamp)
        return self._signer

    def _reload(self, stamp: tuple[int, int, int] | None) -> None:
        try:
            signer = Signer.from_file(self._path)
        except KeyFileError as exc:
            if not self._failing:
                self._log.error("keys_not_reloaded", error=str(exc),
                                key_ids=list(self._signer.key_ids))
            self._failing = True
            return  # stamp not taken: tried again at the next check
        self._seen, self._failing = stamp, False
        if signer.key_ids != self._signer.key_ids:
            self._log.info("keys_reloaded", key_ids=list(signer.key_ids))
        self._signer = signer

    @property
    def key_ids(self) -> tuple[int, ...]:
        return self.current().key_ids

    def for_message(self, tracking_id: str) -> MessageSigner:
        return self.current().for_message(tracking_id)
