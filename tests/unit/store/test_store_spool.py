"""The on-disk spool: append, replay oldest first, locks between writers, corrupt lines, crashes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tests.unit.store.store_helpers import ListLog, make_message

from trackmilter.model import Event
from trackmilter.store.spool import REJECTED_FILE, Spool, encode


def ids(events: list[Event]) -> list[str]:
    return [e.tracking_id for e in events]


def collect(spool: Spool, batch_size: int = 100) -> list[list[str]]:
    batches: list[list[str]] = []
    spool.replay(lambda b: batches.append(ids(b)), batch_size)
    return batches


def test_append_then_replay_in_order_and_batches(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ListLog())
    spool.append([make_message(i) for i in range(3)])
    spool.append([make_message(i) for i in range(3, 5)])
    assert spool.count() == 5
    batches = collect(spool, batch_size=2)
    assert batches == [[f"t{i:015d}" for i in pair] for pair in ((0, 1), (2, 3), (4,))]
    assert spool.segments() == [] and not spool.pending()


def test_segments_replayed_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ListLog())
    for i in range(3):
        spool.append([make_message(i)])
        spool.rotate()  # a new segment each time
    assert len(spool.segments()) == 3
    assert collect(spool) == [["t000000000000000"], ["t000000000000001"], ["t000000000000002"]]


def test_round_trip_preserves_event(tmp_path: Path) -> None:
    event = make_message(7, refused=("x@example.net",), links_=("https://e.example/",))
    spool = Spool(tmp_path, ListLog())
    spool.append([event])
    got: list[Event] = []
    spool.replay(got.extend, 10)
    assert got == [event]


def test_segment_held_by_live_writer_is_skipped(tmp_path: Path) -> None:
    other_process = Spool(tmp_path, ListLog())  # flock: same conflict as between processes
    other_process.append([make_message(1)])
    mine = Spool(tmp_path, ListLog())
    assert collect(mine) == []
    assert len(mine.segments()) == 1
    other_process.close()  # finished with it: now anyone may replay it
    assert collect(mine) == [["t000000000000001"]]


def test_segments_a_dead_process_left_unborn_are_swept(tmp_path: Path) -> None:
    # A crash between creating a segment and renaming it leaves an empty temporary file.
    stale = tmp_path / ".spool-00000000000000000001-999-1.jsonl.tmp"
    stale.touch()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".spool-00000000000000000002-998-1.jsonl.tmp"
    fresh.touch()  # another process may be about to rename this one: not touched
    odd = tmp_path / ".spool-00000000000000000003-997-1.jsonl.tmp"
    odd.write_bytes(encode(make_message(3)))  # never written before the rename: kept
    os.utime(odd, (time.time() - 3600, time.time() - 3600))
    Spool(tmp_path, ListLog())  # at start-up: a crash there leaves nothing to replay
    assert not stale.exists() and fresh.exists() and odd.exists()
    stale.touch()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    spool = Spool(tmp_path, ListLog())
    stale.touch()  # and after each replay
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    spool.append([make_message(1)])
    assert collect(spool) == [["t000000000000001"]]
    assert not stale.exists() and fresh.exists() and odd.exists()


def test_failed_replay_keeps_segment_and_resumes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ListLog())
    spool.append([make_message(i) for i in range(5)])
    seen: list[list[str]] = []

    def flaky(batch: list[Event]) -> None:
        if len(seen) == 1:
            raise ConnectionError("database went away")
        seen.append(ids(batch))

    with pytest.raises(ConnectionError):
        spool.replay(flaky, 2)
    assert len(spool.segments()) == 1
    # Same process: resumes after the last written batch.
    assert collect(spool, 2) == [["t000000000000002", "t000000000000003"], ["t000000000000004"]]


def test_crash_mid_replay_replays_segment_again(tmp_path: Path) -> None:
    spool = Spool(tmp_path, ListLog())
    spool.append([make_message(i) for i in range(3)])
    spool.close()

    def crash(batch: list[Event]) -> None:
        raise KeyboardInterrupt  # stands for the process dying

    with pytest.raises(KeyboardInterrupt):
        Spool(tmp_path, ListLog()).replay(crash, 2)
    # A new process knows no offsets: everything again (duplicates are fine, losses are not).
    assert collect(Spool(tmp_path, ListLog()), 10) == [[f"t{i:015d}" for i in range(3)]]


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        pytest.param(b"this is not json\n", "JSONDecodeError", id="not-json"),
        pytest.param(b'{"kind": "martian"}\n', "ValueError", id="unknown-kind"),
        pytest.param(b'{"kind": "message", "tracking_id": "x"}\n', "KeyError", id="missing-fields"),
        pytest.param(b"[1, 2]\n", "AttributeError", id="not-an-object"),
    ],
)
def test_corrupt_line_moved_aside(tmp_path: Path, garbage: bytes, reason: str) -> None:
    seg = tmp_path / "spool-00000000000000000001-1-1.jsonl"
    seg.write_bytes(encode(make_message(1)) + garbage + encode(make_message(2)))
    log = ListLog()
    assert collect(Spool(tmp_path, log)) == [["t000000000000001", "t000000000000002"]]
    assert not seg.exists()
    assert (tmp_path / (seg.name + ".bad")).read_bytes() == garbage
    ((level, event, kw),) = log.records
    assert (level, event, kw["line"]) == ("error", "spool_line_corrupt", 2)
    assert reason in kw["error"]


def test_torn_last_line_moved_aside(tmp_path: Path) -> None:
    whole = encode(make_message(1))
    torn = encode(make_message(2))[:40]  # crash in the middle of an append
    seg = tmp_path / "spool-00000000000000000001-1-1.jsonl"
    seg.write_bytes(whole + torn)
    assert collect(Spool(tmp_path, ListLog())) == [["t000000000000001"]]
    assert (tmp_path / (seg.name + ".bad")).read_bytes() == torn + b"\n"


def test_reject_keeps_events_for_a_human(tmp_path: Path) -> None:
    log = ListLog()
    spool = Spool(tmp_path, log)
    spool.reject([make_message(3)], "value too long")
    lines = (tmp_path / REJECTED_FILE).read_bytes().splitlines()
    assert [json.loads(line)["tracking_id"] for line in lines] == ["t000000000000003"]
    assert log.events() == ["store_events_rejected"]
    assert spool.segments() == []  # never replayed


def test_append_to_unwritable_directory_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    spool = Spool(blocker / "spool", ListLog())  # a path under a regular file
    with pytest.raises(OSError):
        spool.append([make_message(1)])
