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
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "FileFollower",
    "Position",
    "load_consumer_state",
    "load_position",
    "read_stream",
    "save_position",
]

HEAD_BYTES = 256  # enough to tell two log files apart: the first line carries a timestamp
CHUNK_BYTES = 1 << 20
CONSUMER_KEY = "consumer"  # the consumer's own state, beside the position's fields


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
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _head_digest(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()


class _Open:
    """One open log file and how far into it the consumer's lines go."""

    def __init__(self, fd: int, offset: int) -> None:
        st = os.fstat(fd)
        self.fd = fd
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
    ) -> None:
        self.path = Path(path)
        self.state_path = Path(state_path) if state_path is not None else None
        self._from_end = from_end  # only for a log that is there when we first look
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.chunk_bytes = chunk_bytes
        self._current: _Open | None = None
        self._old: _Open | None = None  # a rotated-away file still being drained

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
            data = self._old.read_lines(self.chunk_bytes, final=True)
            if data:
                return data.decode("utf-8", "replace")
            self._old.close()
            self._old = None
            if self._current is None:  # the new log did not exist yet when we started
                self._current = self._open_new(self.path, 0)
        current = self._current
        if current is None:
            return ""
        if current.truncated():
            current.rewind()
        data = current.read_lines(self.chunk_bytes, final=False)
        if not data and not current.same_file_at(self.path):
            # Renamed away and drained: its last line, if unterminated, then (next poll)
            # the new file, once it exists.
            data = current.read_lines(self.chunk_bytes, final=True)
            if not data and self.path.exists():
                current.close()
                self._current = self._open_new(self.path, 0)
                return self.poll()
        return data.decode("utf-8", "replace")

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
        return self._open_new(self.path, 0)

    def _find_rotated(self, saved: Position) -> Path | None:
        """The file next to the log (`maillog.1`, ...) that the saved position is about."""
        try:
            siblings = list(os.scandir(self.path.parent))
        except OSError:
            return None
        for entry in siblings:
            if entry.name.startswith(self.path.name) and entry.name != self.path.name:
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

    @staticmethod
    def _open_new(path: Path, offset: int | None) -> _Open | None:
        """Open `path` at `offset` (None: at its end)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        if offset is None:
            offset = os.fstat(fd).st_size
        return _Open(fd, offset)


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
