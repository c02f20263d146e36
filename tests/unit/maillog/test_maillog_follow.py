"""The follower, driven one poll at a time: rotation, truncation, restarts, partial lines."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from trackmilter import follow
from trackmilter.follow import (
    Position,
    load_consumer_state,
    load_position,
    read_stream,
    save_position,
)

# These tests leave a rotated file as soon as it is drained; the grace a writer gets to
# append to a renamed log has tests of its own (real follower, fake clock) below.
FileFollower = functools.partial(follow.FileFollower, rotate_grace=0.0)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def drain(follower: FileFollower) -> str:
    """Everything the follower has now, committing as a consumer would."""
    out = []
    while block := follower.poll():
        out.append(block)
        follower.commit()
    return "".join(out)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "maillog"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "maillog.state"


def test_missing_file_then_lines(log: Path, state: Path) -> None:
    f = FileFollower(log, state_path=state)
    assert f.poll() == ""
    append(log, "one\ntwo\n")
    assert drain(f) == "one\ntwo\n"
    assert drain(f) == ""


def test_partial_line_waits_for_its_newline(log: Path) -> None:
    f = FileFollower(log)
    append(log, "one\ntw")
    assert drain(f) == "one\n"
    append(log, "o")
    assert drain(f) == ""
    append(log, "\nthree")
    assert drain(f) == "two\n"


def test_rename_then_new_file(log: Path, state: Path) -> None:
    f = FileFollower(log, state_path=state)
    append(log, "a1\n")
    assert drain(f) == "a1\n"
    append(log, "a2\n")
    log.rename(log.with_name("maillog.1"))
    append(log.with_name("maillog.1"), "a3\n")  # the writer has not reopened yet
    assert drain(f) == "a2\na3\n"
    append(log, "b1\n")
    append(log.with_name("maillog.1"), "a4 unterminated")
    assert drain(f) == "a4 unterminated\nb1\n"
    append(log, "b2\n")
    assert drain(f) == "b2\n"


def test_rename_before_the_new_file_exists(log: Path) -> None:
    f = FileFollower(log)
    append(log, "a1\n")
    assert drain(f) == "a1\n"
    log.rename(log.with_name("maillog.1"))
    assert drain(f) == ""
    assert drain(f) == ""
    append(log, "b1\n")
    assert drain(f) == "b1\n"


def test_copytruncate(log: Path) -> None:
    f = FileFollower(log)
    append(log, "a1\na2\n")
    assert drain(f) == "a1\na2\n"
    log.with_name("maillog.1").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    assert drain(f) == ""
    append(log, "b1\n")
    assert drain(f) == "b1\n"


def test_truncated_and_regrown_before_the_next_poll(log: Path) -> None:
    """Longer than before, so only the changed first bytes show the truncation."""
    f = FileFollower(log)
    append(log, "Nov 27 00:00:01 a1\n")
    assert drain(f) == "Nov 27 00:00:01 a1\n"
    log.write_text("Nov 27 00:00:09 b1\nNov 27 00:00:09 b2\n")
    assert drain(f) == "Nov 27 00:00:09 b1\nNov 27 00:00:09 b2\n"


def test_restart_resumes_after_the_last_committed_line(log: Path, state: Path) -> None:
    append(log, "a1\na2\n")
    first = FileFollower(log, state_path=state)
    assert drain(first) == "a1\na2\n"
    first.close()
    append(log, "a3\n")
    second = FileFollower(log, state_path=state)
    assert drain(second) == "a3\n"


def test_uncommitted_block_is_read_again(log: Path, state: Path) -> None:
    append(log, "a1\n")
    first = FileFollower(log, state_path=state)
    assert first.poll() == "a1\n"  # handed out, but the consumer crashed: no commit
    first.close()
    assert drain(FileFollower(log, state_path=state)) == "a1\n"


def test_restart_after_rotation_while_stopped(log: Path, state: Path) -> None:
    append(log, "a1\n")
    first = FileFollower(log, state_path=state)
    assert drain(first) == "a1\n"
    first.close()
    append(log, "a2\n")
    log.rename(log.with_name("maillog.1"))
    append(log, "b1\n")
    assert drain(FileFollower(log, state_path=state)) == "a2\nb1\n"


def test_restart_when_the_rotated_file_is_gone(log: Path, state: Path) -> None:
    append(log, "a1\n")
    first = FileFollower(log, state_path=state)
    assert drain(first) == "a1\n"
    first.close()
    log.unlink()
    append(log, "Nov 27 b1\n")  # may even reuse the inode: the first bytes differ
    lost: list[Position] = []
    assert drain(FileFollower(log, state_path=state, on_lost=lost.append)) == "Nov 27 b1\n"
    assert [p.offset for p in lost] == [len("a1\n")]  # the daemons log this


def test_a_rotated_file_found_is_not_lost(log: Path, state: Path) -> None:
    append(log, "a1\n")
    first = FileFollower(log, state_path=state)
    assert drain(first) == "a1\n"
    first.close()
    log.rename(log.with_name("maillog.1"))
    append(log, "b1\n")
    lost: list[Position] = []
    assert drain(FileFollower(log, state_path=state, on_lost=lost.append)) == "b1\n"
    assert lost == []


@pytest.mark.parametrize("content", ["", "not json", '{"offset": 1}', "[1, 2]"])
def test_unreadable_state_starts_over(log: Path, state: Path, content: str) -> None:
    state.write_text(content)
    append(log, "a1\n")
    assert drain(FileFollower(log, state_path=state)) == "a1\n"


def test_from_end_without_state(log: Path, state: Path) -> None:
    append(log, "old\n")
    f = FileFollower(log, state_path=state, from_end=True)
    assert drain(f) == ""
    append(log, "new\n")
    assert drain(f) == "new\n"


def test_a_line_longer_than_a_chunk_is_not_stuck(log: Path) -> None:
    f = FileFollower(log, chunk_bytes=4)
    append(log, "abcdefgh\nij\n")
    assert drain(f) == "abcdefgh\nij\n"


def test_invalid_utf8_is_replaced(log: Path) -> None:
    log.write_bytes(b"caf\xe9\n")
    assert drain(FileFollower(log)) == "caf\ufffd\n"


def test_position_round_trip_is_atomic(state: Path) -> None:
    position = Position(device=1, inode=2, offset=3, head_len=3, head="ab")
    save_position(state, position)
    assert load_position(state) == position
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]
    assert load_position(state.with_name("missing")) is None


def test_follow_waits_through_the_injected_sleep(log: Path, state: Path) -> None:
    """The sleep callback plays the MTA: each wait, the log grows or rotates."""
    script: list[Callable[[], object]] = [
        lambda: append(log, "a1\n"),
        lambda: log.rename(log.with_name("maillog.1")),
        lambda: append(log, "b1\n"),
        lambda: None,
    ]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        script.pop(0)()

    f = FileFollower(log, state_path=state, poll_interval=0.5, sleep=sleep)
    blocks = list(f.follow(should_stop=lambda: not script))
    assert blocks == ["a1\n", "b1\n"]
    assert sleeps == [0.5] * 4
    assert drain(FileFollower(log, state_path=state)) == ""


def test_follow_commits_only_when_the_next_block_is_asked_for(log: Path, state: Path) -> None:
    append(log, "a1\n")
    blocks = FileFollower(log, state_path=state).follow()
    assert next(blocks) == "a1\n"
    blocks.close()  # the consumer stopped while holding the block
    assert drain(FileFollower(log, state_path=state)) == "a1\n"


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_read_stream(chunk: int) -> None:
    data = b"a1\nb22\n\nc3 no newline"
    assert "".join(read_stream(io.BytesIO(data), chunk)) == "a1\nb22\n\nc3 no newline\n"
    for block in read_stream(io.BytesIO(data), chunk):
        assert block.endswith("\n")


def test_restart_after_rotation_before_the_new_file_exists(log: Path, state: Path) -> None:
    append(log, "a1\n")
    first = FileFollower(log, state_path=state)
    assert drain(first) == "a1\n"
    first.close()
    append(log, "a2\n")
    log.rename(log.with_name("maillog.1"))
    second = FileFollower(log, state_path=state)
    assert drain(second) == "a2\n"
    assert drain(second) == ""
    assert drain(second) == ""
    append(log, "b1\n")
    assert drain(second) == "b1\n"
    second.close()
    assert drain(FileFollower(log, state_path=state)) == ""


def test_from_end_only_for_a_log_that_is_already_there(log: Path) -> None:
    f = FileFollower(log, from_end=True)
    assert drain(f) == ""
    append(log, "first\n")
    assert drain(f) == "first\n"


def test_consumer_state_is_saved_with_the_position_in_one_file(state: Path) -> None:
    """The tracker's state and the position describe the same line: one atomic write."""
    position = Position(device=1, inode=2, offset=3, head_len=3, head="ab")
    save_position(state, position, '{"version":1,"local":["A"]}')
    assert load_position(state) == position
    assert load_consumer_state(state) == {"version": 1, "local": ["A"]}
    assert sorted(p.name for p in state.parent.iterdir()) == [state.name]
    save_position(state, position)
    assert load_consumer_state(state) is None
    assert load_consumer_state(state.with_name("missing")) is None


@pytest.mark.parametrize("content", ["not json", "[1, 2]"])
def test_unreadable_consumer_state_is_an_error_for_the_caller(state: Path, content: str) -> None:
    state.write_text(content)
    with pytest.raises(ValueError):
        load_consumer_state(state)


def test_commit_saves_the_consumer_state(log: Path, state: Path) -> None:
    append(log, "a1\n")
    f = FileFollower(log, state_path=state)
    assert f.poll() == "a1\n"
    f.commit('{"n": 1}')
    assert load_consumer_state(state) == {"n": 1}
    f.close()
    assert drain(FileFollower(log, state_path=state)) == ""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_renamed_log_is_read_until_its_writer_has_been_quiet(log: Path, state: Path) -> None:
    """nginx and rsyslog append to the renamed file until logrotate's postrotate tells
    them to reopen (nginx writes its buffer then): those lines are read too."""
    clock = Clock()
    f = follow.FileFollower(log, state_path=state, clock=clock, rotate_grace=5.0)
    append(log, "a1\n")
    assert drain(f) == "a1\n"
    rotated = log.with_name("maillog.1")
    log.rename(rotated)
    append(log, "b1\n")                     # logrotate's `create`: the new file at once
    clock.now += 1
    assert drain(f) == ""                   # still waiting on the old file
    append(rotated, "a2 flushed on reopen\n")
    clock.now += 1
    assert drain(f) == "a2 flushed on reopen\n"
    clock.now += 4.9
    assert drain(f) == ""
    clock.now += 0.2
    assert drain(f) == "b1\n"
    f.close()
    assert drain(follow.FileFollower(log, state_path=state, clock=clock)) == ""


def test_a_backlog_over_two_rotations_reads_every_file_in_order(log: Path, state: Path
                                                                 ) -> None:
    clock = Clock()
    first = follow.FileFollower(log, state_path=state, clock=clock, rotate_grace=5.0)
    append(log, "a1\n")
    assert drain(first) == "a1\n"
    first.close()
    # Stopped while the log was rotated twice (mtimes in order, as the writes were).
    append(log, "a2\n")
    log.rename(log.with_name("maillog.1"))
    append(log, "b1\n")
    os.utime(log.with_name("maillog.1"), (1, 1))
    os.utime(log, (2, 2))
    log.with_name("maillog.1").rename(log.with_name("maillog.2"))
    log.rename(log.with_name("maillog.1"))
    append(log, "c1\n")
    state.with_name("maillog.state.tmp").write_text("not a log")   # not a rotated name
    log.with_name("maillog.3.gz").write_bytes(b"\x1f\x8b")         # compressed: not read
    second = follow.FileFollower(log, state_path=state, clock=clock, rotate_grace=5.0)
    out = []
    for _ in range(10):
        out.append(drain(second))
        clock.now += 6
    assert "".join(out) == "a2\nb1\nc1\n"
