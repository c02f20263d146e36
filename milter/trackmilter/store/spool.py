"""Append-only on-disk spool of events the database could not take, and its crash-safe replay.

Layout: ``spool-<ns>-<pid>-<n>.jsonl`` segment files, one JSON line (``event.to_dict()``) per
event. A writer appends to its own segment and holds an ``flock`` on it while it is open, so
several processes (milter, log follower, tracker) may share one directory: a replay only
takes segments nobody holds, i.e. ones a writer has finished with or a dead process left
behind. A segment is deleted only after every event in it has been written, so a crash
mid-replay replays the whole segment again (duplicates are harmless: writes are idempotent).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from trackmilter.model import Event, event_from_dict

SEGMENT_GLOB = "spool-*.jsonl"
_UNBORN_AGE = 60.0  # seconds
REJECTED_FILE = "rejected.jsonl.bad"


class Log(Protocol):
    """The part of a structlog logger the store uses."""

    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(event: Event) -> bytes:
    """One event as one JSON line (the journal's and the spool's format)."""
    return _ENCODER.encode(event.to_dict()).encode() + b"\n"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    # A new or removed file name is durable only once its directory is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One process's handle on a spool directory; thread-safe."""

    def __init__(self, directory: Path, logger: Log) -> None:
        self.directory = directory
        self._log = logger
        self._lock = threading.Lock()
        self._fd: int | None = None  # the segment we append to, flock'ed while open
        self._path: Path | None = None
        self._counter = 0
        self._counter_lock = threading.Lock()
        # Progress inside segments whose replay failed part-way, so that a flapping
        # database does not make us rewrite the same events again and again.
        self._offsets: dict[str, int] = {}
        self._sweep_unborn()

    # -- appending ----------------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> None:
        """Append and fsync; raises ``OSError`` if the disk cannot take them."""
        data = b"".join(encode(e) for e in events)
        if not data:
            return
        with self._lock:
            fd = self._fd if self._fd is not None else self._open_segment()
            size = os.fstat(fd).st_size
            try:
                write_all(fd, data)
                os.fsync(fd)
            except OSError:
                # Never leave half a line for the next append to run into: cut back, then
                # start a fresh segment next time in case the cut failed too.
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                self._close_segment()
                raise

    def _open_segment(self) -> int:
        fd, path = self.open_segment()
        self._fd, self._path = fd, path
        return fd

    def open_segment(self, *, sync_directory: bool = True) -> tuple[int, Path]:
        """A new segment, created, locked (``flock``, held while the fd is open) and named
        so that a replay takes it only once the fd is closed. Thread-safe."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        name = f"spool-{time.time_ns():020d}-{os.getpid()}-{n}.jsonl"
        # Created under a name replay ignores, locked, then renamed: a replay in another
        # process can never claim (and delete) a segment before we hold its lock.
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        try:
            # Blocking: nobody else locks a name this new for longer than a glance.
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = self.directory / name
            os.rename(tmp, path)
            if sync_directory:
                _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return fd, path

    def resume_at(self, path: Path, offset: int) -> None:
        """This process's replay of ``path`` starts at ``offset`` (the lines before it are
        stored already; another process would replay them again, harmlessly)."""
        if offset > 0:
            self._offsets[path.name] = offset

    def _close_segment(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._path = None

    def rotate(self) -> None:
        """Finish the current segment so that it can be replayed; the next append starts one."""
        with self._lock:
            self._close_segment()

    def close(self) -> None:
        self.rotate()

    def reject(self, events: Sequence[Event], reason: str) -> None:
        """Keep events the database refused as data in ``rejected.jsonl.bad``, for a human."""
        path = self.directory / REJECTED_FILE
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                write_all(fd, b"".join(encode(e) for e in events))
                os.fsync(fd)
            finally:
                os.close(fd)
        self._log.error("store_events_rejected", count=len(events), reason=reason, file=str(path))

    # -- replaying ----------------------------------------------------------------------

    def segments(self) -> list[Path]:
        """Segment files, oldest first (their names start with the creation time)."""
        try:
            return sorted(self.directory.glob(SEGMENT_GLOB))
        except OSError:
            return []

    def pending(self) -> bool:
        return bool(self.segments())

    def count(self) -> int:
        """Events in all segments (for the gauge at start-up; cheap enough for a spool)."""
        total = 0
        for path in self.segments():
            try:
                with path.open("rb") as f:
                    total += sum(1 for line in f if line.strip())
            except OSError:
                continue
        return total

    def replay(self, write: Callable[[list[Event]], None], batch_size: int) -> int:
        """Pass every segment nobody holds to ``write`` in batches, oldest first.

        A segment is deleted once all its events are written. An exception from ``write``
        propagates; the segment stays and the next call resumes where this one stopped.
        Returns the number of events written.
        """
        self.rotate()
        total = 0
        for path in self.segments():
            fd = self._claim(path)
            if fd is None:
                continue
            try:
                for batch, end in self._read(fd, path, batch_size):
                    write(batch)
                    self._offsets[path.name] = end
                    total += len(batch)
                os.unlink(path)
                _fsync_dir(self.directory)
                self._offsets.pop(path.name, None)
            finally:
                os.close(fd)
        self._sweep_unborn()
        return total

    def _sweep_unborn(self) -> None:
        """Delete segments that a process died creating: still under their temporary
        name, unlocked, empty (nothing is written before the rename) and a minute old (a
        live process renames its own within microseconds of creating it)."""
        try:
            unborn = list(self.directory.glob(".spool-*.tmp"))
        except OSError:
            return
        for path in unborn:
            # Age first, without touching the lock: a live process creating a segment
            # must never find its own temporary file locked by us.
            try:
                if time.time() - path.stat().st_mtime <= _UNBORN_AGE:
                    continue
            except OSError:
                continue
            fd = self._claim(path)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_size == 0:
                    path.unlink()
            except OSError:
                pass
            finally:
                os.close(fd)

    def _claim(self, path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None  # replayed by another process since we listed it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None  # a live writer is still appending to it
        if os.fstat(fd).st_nlink == 0:
            os.close(fd)  # another process replayed and deleted it while we waited
            return None
        return fd

    def _read(self, fd: int, path: Path, batch_size: int) -> Iterator[tuple[list[Event], int]]:
        bad_path = path.with_name(path.name + ".bad")
        bad: list[bytes] = []
        with os.fdopen(fd, "rb", closefd=False) as f:
            f.seek(self._offsets.get(path.name, 0))
            batch: list[Event] = []
            lineno = 0
            while True:
                line = f.readline()
                if not line:
                    break
                lineno += 1
                if not line.strip():
                    continue
                try:
                    batch.append(event_from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError, AttributeError) as e:
                    # A torn last line (crash mid-append) or a hand-edited file: keep the
                    # bytes for a human, go on with the rest.
                    self._log.error(
                        "spool_line_corrupt", segment=str(path), line=lineno,
                        error=f"{type(e).__name__}: {e}", moved_to=str(bad_path),
                    )
                    bad.append(line if line.endswith(b"\n") else line + b"\n")
                if len(batch) >= batch_size:
                    self._move_aside(bad_path, bad)
                    yield batch, f.tell()
                    batch = []
            self._move_aside(bad_path, bad)
            if batch:
                yield batch, f.tell()

    @staticmethod
    def _move_aside(bad_path: Path, lines: list[bytes]) -> None:
        if not lines:
            return
        fd = os.open(bad_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            write_all(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        lines.clear()
