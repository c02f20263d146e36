"""The journal: every event a daemon takes is on local disk before the answer that depends on it.

``BatchWriter.submit`` appends the event's line to this process's current journal segment
with one ``write(2)`` — no ``fsync``: what the kernel holds survives a ``kill -9`` of the
process at any instant, which is the fault this guards against (a crash of the machine
itself is Postfix's queue and the database's to survive; the journal is fsynced whenever it
is handed over because the database is unavailable, and on stop).

Segments use the spool's file names, lock and line format (``store.spool``): a segment is
``flock``ed while this process appends to it, and a segment nobody holds is one the spool's
replay takes. So after a crash the next start of any daemon sharing the directory replays
what the dead process journaled; writes are idempotent, so events that had already been
stored are written again harmlessly.

While the database works, the writer stores events from memory and tells the journal how
far it got (``stored``); a segment that is sealed and fully stored is deleted. When the
database fails, or the memory queue is full, the writer *hands over*: it detaches every
segment it holds (sealed) while dropping their events from memory — they are on disk —,
then releases them to the spool's replay, each from its first unstored line.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from trackmilter.store.spool import Spool, write_all

# Past this size the writer seals the segment and starts a new one: a crash replays at most
# about this much that was already stored, and a fully stored segment can be deleted.
DEFAULT_SEGMENT_BYTES = 1 << 20


@dataclass(eq=False)
class Segment:
    """One journal segment this process holds (locked) and appends to or still needs."""

    path: Path
    fd: int
    size: int = 0  # bytes appended
    events: int = 0  # lines appended
    stored_to: int = 0  # every line ending at or before this offset is in the database
    stored: int = 0  # lines stored
    synced: int = 0  # bytes known to be fsynced
    sealed: bool = False


class Journal:
    """This process's journal segments in a spool directory. Not thread-safe: the caller
    (BatchWriter) appends, seals, collects and detaches under its own lock; ``stored`` and
    ``release`` run in the writer thread (or once it has stopped)."""

    def __init__(self, spool: Spool, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self._spool = spool
        self._segment_bytes = max(1, segment_bytes)
        self._segments: list[Segment] = []  # oldest first; the last one is current unless sealed
        self._closed = False

    def append(self, line: bytes) -> tuple[Segment, int]:
        """Write one encoded event; returns its segment and the offset after it.

        Raises ``OSError`` (disk full, directory gone); nothing half-written is left behind.
        """
        seg = self._current()
        try:
            write_all(seg.fd, line)
        except OSError:
            # Never leave half a line for the next append: cut back; if even that fails,
            # seal the segment so that the next append starts a fresh one.
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                seg.sealed = True
            raise
        seg.size += len(line)
        seg.events += 1
        return seg, seg.size

    def rotate_due(self) -> bool:
        """The current segment is big enough to seal, or wholly stored: sealed, the stored one
        is deleted at once, so that an idle daemon's spool directory is empty."""
        segs = self._segments
        if not segs or segs[-1].sealed:
            return False
        cur = segs[-1]
        return cur.size >= self._segment_bytes or 0 < cur.size <= cur.stored_to

    def seal(self) -> None:
        """Start a new segment with the next append (called under the writer's lock)."""
        if self._segments:
            self._segments[-1].sealed = True

    def stored(self, seg: Segment, end: int) -> None:
        """Lines of ``seg`` up to ``end`` are in the database (in order, from the writer)."""
        if end > seg.stored_to:
            seg.stored_to = end
        seg.stored += 1

    def collect(self) -> int:
        """Delete sealed segments whose every line is stored (under the caller's lock);
        returns how many went."""
        gone = 0
        for seg in [s for s in self._segments if s.sealed and s.stored_to >= s.size]:
            self._segments.remove(seg)
            os.close(seg.fd)
            with contextlib.suppress(OSError):
                seg.path.unlink()
            gone += 1
        return gone

    def detach(self) -> list[Segment]:
        """Seal every segment and stop tracking them (under the caller's lock, together with
        dropping their events from memory); the next append starts a new segment."""
        segs, self._segments = self._segments, []
        for seg in segs:
            seg.sealed = True
        return segs

    def release(self, segs: list[Segment]) -> int:
        """Hand detached segments to the spool's replay, each from its first unstored line
        (fsynced first); a fully stored one is deleted. Returns the events handed over."""
        handed = 0
        for seg in segs:
            try:
                if seg.stored_to >= seg.size:
                    with contextlib.suppress(OSError):
                        seg.path.unlink()
                    continue
                _sync(seg)
                self._spool.resume_at(seg.path, seg.stored_to)
                handed += seg.events - seg.stored
            finally:
                with contextlib.suppress(OSError):
                    os.close(seg.fd)  # releases the flock: the segment is now the spool's
        return handed

    def close(self) -> list[Segment]:
        """Take no more appends; returns every segment, for ``release``."""
        self._closed = True
        return self.detach()

    def _current(self) -> Segment:
        if self._closed:
            raise OSError("journal closed")
        if self._segments and not self._segments[-1].sealed:
            return self._segments[-1]
        fd, path = self._spool.open_segment(sync_directory=False)
        seg = Segment(path, fd)
        self._segments.append(seg)
        return seg


def _sync(seg: Segment) -> None:
    if seg.size > seg.synced:
        with contextlib.suppress(OSError):
            os.fsync(seg.fd)
            seg.synced = seg.size
