"""Follow a log file like `tail -F`, remembering the position across restarts; read stdin.

The follower yields blocks of whole lines (a line is emitted only once its newline has
been written) and saves its position only when the consumer comes back for the next
block, so a crash re-reads at most the block in hand and never skips one. A file is
known by device, inode and a hash of its first bytes: a rename (logrotate's default)
is drained to its end before the new file is opened; copytruncate is seen as the file
growing shorter or its first bytes changing; a file replaced while we were stopped is
looked for next to the log (`maillog.1`) so its tail is not lost. A consumer that keeps
state of its own across lines saves it in the same file as the position, in one atomic
write, so that after a crash the two always describe the same point of the log.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FileFollower",
    "Position",
    "load_consumer_state",
    "load_position",
    "read_stream",
    "save_position",
    "warn_lost",
]

HEAD_BYTES = 256  # enough to tell two log files apart: the first line carries a timestamp
CHUNK_BYTES = 1 << 20
CONSUMER_KEY = "consumer"  # the consumer's own state, beside the position's fields
# A renamed log is read until it has been quiet this long: its writer still appends to it
# until told to reopen (logrotate's postrotate), and nginx flushes its buffer every second.
ROTATE_GRACE = 5.0


@dataclass(frozen=True)
class Position:
    """Where the consumer got to: the file's identity and the offset after its last line."""

    device: int
    inode: int
    offset: int
    head_len: int
    head: str  # sha256 hex of the file's first head_len bytes


def load_position(path: Path) -> Position | None:
    """The saved position, or None when there is none or it cannot be read back."""
    try:
        data = json.loads(path.read_text())
        return Position(**{k: data[k] for k in Position.__dataclass_fields__})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def load_consumer_state(path: Path) -> object:
    """What the consumer saved with the position (None when nothing was saved).

    Raises ValueError when the file is there but cannot be read back as what
    `save_position` writes: the caller decides whether to start afresh.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    data = json.loads(text)  # JSONDecodeError is a ValueError
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not an object")
    return data.get(CONSUMER_KEY)


def save_position(path: Path, position: Position, consumer: str | None = None) -> None:
    """Write the position atomically: a crash leaves the old state or the new one.

    `consumer` is the consumer's own state as JSON text, already encoded (it may be large
    and unchanged since the last save; the caller can keep the text).
    """
    text = json.dumps(asdict(position))
    if consumer is not None:
        text = f'{text[:-1]}, "{CONSUMER_KEY}": {consumer}}}'
    write_atomically(path, text)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash leaves the old file or the new one:
    written beside it, synced, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def warn_lost(log: Any, event: str, path: Path | str) -> Callable[[Position], None]:
    """An `on_lost` that logs `event` with what an administrator needs to know."""

    def lost(saved: Position) -> None:
        log.warning(event, path=str(path), saved_offset=saved.offset,
                    hint="the file the saved position was in is not beside the log any more "
                         "(deleted, or compressed by logrotate): what was written to it after "
                         "that position is not read; reading resumes at the start of the log")

    return lost


def _head_digest(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()


class _Open:
    """One open log file and how far into it the consumer's lines go."""

    def __init__(self, fd: int, offset: int, now: float = 0.0) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.grew_at = now  # when lines last came out of it (or it was opened)
        self.device, self.inode = st.st_dev, st.st_ino
        self.offset = offset
        self.head_len = min(HEAD_BYTES, max(offset, 0))
        self.head = _head_digest(fd, self.head_len)

    def position(self) -> Position:
        return Position(self.device, self.inode, self.offset, self.head_len, self.head)

    def same_file_at(self, path: Path) -> bool:
        try:
            st = path.stat()
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == (self.device, self.inode)

    def rewind(self) -> None:
        self.offset = self.head_len = 0
        self.head = _head_digest(self.fd, 0)

    def truncated(self) -> bool:
        """copytruncate: the file is now shorter than our offset, or starts differently."""
        if os.fstat(self.fd).st_size < self.offset:
            return True
        return _head_digest(self.fd, self.head_len) != self.head

    def read_lines(self, limit: int, *, final: bool) -> bytes:
        """Whole lines from the offset on (at most `limit` bytes); advances the offset.

        A line without its newline yet stays unread, unless `final` (the file was
        rotated away and will not grow) or it alone fills `limit` (no line is that long).
        """
        data = os.pread(self.fd, limit, self.offset)
        end = data.rfind(b"\n") + 1
        if end == 0 and data and (final or len(data) == limit):
            end = len(data)
        data = data[:end]
        if final and data and not data.endswith(b"\n"):
            data += b"\n"
        self.offset += end
        if self.head_len < HEAD_BYTES and self.offset > self.head_len:
            self.head_len = min(HEAD_BYTES, self.offset)
            self.head = _head_digest(self.fd, self.head_len)
        return data

    def mtime(self) -> float:
        return os.fstat(self.fd).st_mtime

    def close(self) -> None:
        os.close(self.fd)


class FileFollower:
    """`tail -F` for one log file, with its position kept in `state_path` (when given).

    Drive it with `poll()` (one step: whatever whole lines are there now) and `commit()`
    (the consumer is done with them), or with `follow()`, which loops over both and
    waits `poll_interval` between empty polls through the injected `sleep`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        state_path: Path | str | None = None,
        from_end: bool = False,
        poll_interval: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        chunk_bytes: int = CHUNK_BYTES,
        rotate_grace: float = ROTATE_GRACE,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[Position], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.state_path = Path(state_path) if state_path is not None else None
        self._from_end = from_end  # only for a log that is there when we first look
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.chunk_bytes = chunk_bytes
        self.rotate_grace = rotate_grace
        self.clock = clock
        self._current: _Open | None = None
        self._old: _Open | None = None  # a rotated-away file still being drained
        self._done: set[tuple[int, int]] = set()  # rotated files read to their end
        # Told when the saved position's file is nowhere to be found (deleted, or
        # compressed by logrotate): what was written after it there is never read.
        self._on_lost = on_lost

    def follow(self, should_stop: Callable[[], bool] = lambda: False) -> Generator[str, None, None]:
        """Blocks of whole lines as they are written, until `should_stop()` is true.

        The position is saved when the consumer asks for the next block: the block in
        hand when a crash happens is read again on restart, none is skipped.
        """
        try:
            while not should_stop():
                block = self.poll()
                if block:
                    yield block
                    self.commit()
                else:
                    self.sleep(self.poll_interval)
        finally:
            self.close()

    def poll(self) -> str:
        """The whole lines written since the last poll ("" when none), decoded as UTF-8."""
        if self._current is None and self._old is None:
            self._current = self._open()
        if self._old is not None:
            data = self._read(self._old, final=False)
            if data or not self._quiet(self._old):
                return data.decode("utf-8", "replace")
            data = self._read(self._old, final=True)
            if data:
                return data.decode("utf-8", "replace")
            self._old = self._finish(self._old)
            if self._old is not None:
                return self.poll()
            if self._current is None:  # the new log did not exist yet when we started
                self._current = self._open_new(self.path, 0)
        current = self._current
        if current is None:
            return ""
        if current.truncated():
            current.rewind()
        data = self._read(current, final=False)
        if not data and not current.same_file_at(self.path):
            # Renamed away and drained. Its writer may append to it until it reopens its
            # log (nginx writes its buffer there on USR1, rsyslog until its HUP): the
            # file is left only once it has been quiet for rotate_grace. Then its last
            # line, if unterminated, and (next poll) a file rotated after it that is
            # still unread (a backlog over two rotations), else the new file.
            if not self._quiet(current):
                return ""
            data = self._read(current, final=True)
            if not data and self.path.exists():
                following = self._finish(current)
                self._current = following or self._open_new(self.path, 0)
                return self.poll()
        return data.decode("utf-8", "replace")

    def _read(self, file: _Open, *, final: bool) -> bytes:
        data = file.read_lines(self.chunk_bytes, final=final)
        if data:
            file.grew_at = self.clock()
        return data

    def _quiet(self, file: _Open) -> bool:
        return self.clock() - file.grew_at >= self.rotate_grace

    def _finish(self, file: _Open) -> _Open | None:
        """Close a rotated file read to its end; the next rotated one still unread, if any."""
        self._done.add((file.device, file.inode))
        after = file.mtime()
        file.close()
        nxt = self._next_rotated(after)
        return self._open_new(nxt, 0) if nxt is not None else None

    def _next_rotated(self, after: float) -> Path | None:
        """The oldest file beside the log named as logrotate names them (`hits.log.1`,
        `hits.log-20261127`; a compressed one cannot be read) written to since `after` and
        not read yet: what logrotate renamed while we were behind."""
        try:
            live = self.path.stat()
            live_id: tuple[int, int] | None = (live.st_dev, live.st_ino)
        except OSError:
            live_id = None
        rotated = re.compile(re.escape(self.path.name) + r"[.-][0-9][0-9_.-]*")
        found: list[tuple[float, str]] = []
        # hits.log.1, hits.log-20261127 (dateext); not hits.log.2.gz, not hits.log.state
        for entry in self._siblings():
            if not rotated.fullmatch(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in self._done or ident == live_id or st.st_mtime < after:
                continue
            found.append((st.st_mtime, entry.path))
        return Path(min(found)[1]) if found else None

    def _siblings(self) -> list[os.DirEntry[str]]:
        """The other files whose name starts with the log's (`maillog.1`, ...)."""
        try:
            entries = list(os.scandir(self.path.parent))
        except OSError:
            return []
        return [e for e in entries
                if e.name.startswith(self.path.name) and e.name != self.path.name]

    def commit(self, consumer: str | None = None) -> None:
        """Save the position after the lines returned so far (they have been handled),
        with the consumer's state (JSON text) as it is after those lines."""
        file = self._old or self._current
        if self.state_path is not None and file is not None:
            save_position(self.state_path, file.position(), consumer)

    def close(self) -> None:
        for file in (self._old, self._current):
            if file is not None:
                file.close()
        self._old = self._current = None

    def _open(self) -> _Open | None:
        """Open the log where the saved position says, finding a file rotated meanwhile."""
        saved = load_position(self.state_path) if self.state_path is not None else None
        from_end, self._from_end = self._from_end, False
        if saved is None:
            return self._open_new(self.path, None if from_end else 0)
        if self._matches(self.path, saved):
            return self._open_new(self.path, saved.offset)
        rotated = self._find_rotated(saved)
        if rotated is not None:
            self._old = self._open_new(rotated, saved.offset)
        elif self._on_lost is not None:
            self._on_lost(saved)
        return self._open_new(self.path, 0)

    def _find_rotated(self, saved: Position) -> Path | None:
        """The file next to the log (`maillog.1`, ...) that the saved position is about."""
        for entry in self._siblings():
            candidate = Path(entry.path)
            if self._matches(candidate, saved):
                return candidate
        return None

    @staticmethod
    def _matches(path: Path, saved: Position) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            return (
                (st.st_dev, st.st_ino) == (saved.device, saved.inode)
                and st.st_size >= saved.offset
                and _head_digest(fd, saved.head_len) == saved.head
            )
        finally:
            os.close(fd)

    def _open_new(self, path: Path, offset: int | None) -> _Open | None:
        """Open `path` at `offset` (None: at its end)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        if offset is None:
            offset = os.fstat(fd).st_size
        return _Open(fd, offset, self.clock())


def read_stream(stream: io.BufferedIOBase, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Blocks of whole lines from a byte stream (`sys.stdin.buffer`) until its end.

    read1 returns what a pipe has now rather than waiting for a full chunk, so a live
    `tail -f | trackmilter maillog -` is not held back. A last line without a newline
    is still a line at end of input.
    """
    rest = b""
    while chunk := stream.read1(chunk_bytes):
        data = rest + chunk
        end = data.rfind(b"\n") + 1
        if end:
            yield data[:end].decode("utf-8", "replace")
        rest = data[end:]
    if rest:
        yield (rest + b"\n").decode("utf-8", "replace")
