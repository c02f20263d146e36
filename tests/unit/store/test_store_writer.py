"""BatchWriter: batching, real database outages with spool and replay, hangs, rejects, shutdown."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.store.store_helpers import (
    PG_SKIP,
    PG_URL,
    FakeClock,
    FakeStore,
    ListLog,
    SocketProxy,
    make_message,
    row_counts,
    sample,
    via_proxy,
    wait_for,
    with_schema,
)

from trackmilter.metrics import Metrics
from trackmilter.store import (
    SQLStore,
    StoreConfigError,
)
from trackmilter.store.engine import DEFAULT_CONNECT_TIMEOUT
from trackmilter.store.spool import REJECTED_FILE, Spool
from trackmilter.store.writer import BatchWriter


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def writers() -> Iterator[list[BatchWriter]]:
    """Closes every writer a test made, even a failing one."""
    made: list[BatchWriter] = []
    yield made
    for w in made:
        w.close(timeout=5)


def tids(n: int, start: int = 0) -> list[str]:
    return [f"t{i:015d}" for i in range(start, start + n)]


def test_batches_up_to_max_batch(spool_dir: Path, metrics: Metrics) -> None:
    store = FakeStore()
    writer = BatchWriter(store, spool_dir, metrics, max_batch=500, flush_interval=60)
    for i in range(1200):
        writer.submit(make_message(i))
    writer.close()  # flushes the last, partial batch without waiting flush_interval
    assert [len(b) for b in store.batches] == [500, 500, 200]
    assert store.written() == tids(1200)
    assert sample(metrics, "trackmilter_store_events_written_total") == 1200
    assert sample(metrics, "trackmilter_store_batch_duration_seconds_count") == 3
    assert sample(metrics, "trackmilter_store_queue_events") == 0


def test_flush_interval_writes_a_lone_event(
    spool_dir: Path, metrics: Metrics, writers: list[BatchWriter]
) -> None:
    store = FakeStore()
    writers.append(BatchWriter(store, spool_dir, metrics, flush_interval=0.01))
    writers[0].submit(make_message(1))
    wait_for(lambda: store.written() == tids(1, 1), what="lone event written")
    assert writers[0].flush(5)


def test_database_refusing_data_sets_events_aside(
    spool_dir: Path, metrics: Metrics
) -> None:
    store = FakeStore()
    store.refuse = {"t000000000000001"}
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=60, logger=ListLog())
    for i in range(3):
        writer.submit(make_message(i))
    writer.close()
    assert sorted(store.written()) == ["t000000000000000", "t000000000000002"]
    assert b"t000000000000001" in (spool_dir / REJECTED_FILE).read_bytes()
    assert Spool(spool_dir, ListLog()).segments() == []  # not retried forever
    assert sample(metrics, "trackmilter_store_events_written_total") == 2


def test_close_spools_when_database_down(spool_dir: Path, metrics: Metrics) -> None:
    store = FakeStore()
    store.down = True
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=60, retry_interval=60)
    for i in range(3):
        writer.submit(make_message(i))
    writer.close(timeout=5)
    assert Spool(spool_dir, ListLog()).count() == 3
    assert sample(metrics, "trackmilter_store_spool_events") == 3
    assert sample(metrics, "trackmilter_store_write_failures_total") == 1


def test_retries_only_every_retry_interval(
    spool_dir: Path, metrics: Metrics, writers: list[BatchWriter]
) -> None:
    clock = FakeClock()
    store = FakeStore()
    store.down = True
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=0, retry_interval=5,
                         clock=clock)
    writers.append(writer)
    writer.submit(make_message(0))
    assert writer.flush(5)
    assert (store.attempts, writer.healthy) == (1, False)
    writer.submit(make_message(1))
    assert writer.flush(5)
    store.down = False
    writer.submit(make_message(2))
    assert writer.flush(5)
    assert store.attempts == 1  # not due yet: straight to the spool, in order
    assert Spool(spool_dir, ListLog()).count() == 3
    clock.now += 5
    writer.submit(make_message(3))  # wakes the writer; the retry is due
    wait_for(lambda: sorted(store.written()) == tids(4), what="replay + new event")
    assert store.written()[:3] == tids(3)  # the spool goes first
    assert writer.healthy
    # The event that woke the writer is replayed from the journal too, after the others.
    assert sample(metrics, "trackmilter_store_spool_replayed_total") == 4
    assert sample(metrics, "trackmilter_store_spool_events") == 0


def test_submit_never_blocks_when_database_hangs(spool_dir: Path, metrics: Metrics) -> None:
    store = FakeStore()
    store.gate = threading.Event()
    log = ListLog()
    writer = BatchWriter(store, spool_dir, metrics, max_batch=10, flush_interval=0,
                         high_water=20, write_timeout=0, logger=log)
    writer.submit(make_message(0))
    wait_for(store.entered.is_set, what="writer inside store.write")
    start = time.monotonic()
    for i in range(1, 101):
        writer.submit(make_message(i))
    elapsed = time.monotonic() - start
    assert not store.gate.is_set()  # the database still hangs: nothing waited for it
    assert elapsed < 1.0, f"100 submits took {elapsed:.3f}s"
    # Every event is in the journal on disk the moment submit returns; 20 also wait in
    # memory (the high-water mark), the rest only on disk.
    assert Spool(spool_dir, ListLog()).count() == 101
    assert sample(metrics, "trackmilter_store_queue_events") == 20
    assert "store_queue_overflow" in log.events()

    writer.close(timeout=0.2)  # the writer is still stuck: the journal stays for the replay
    assert Spool(spool_dir, ListLog()).count() == 101
    assert "store_close_left_on_disk" in log.events()
    store.gate.set()
    wait_for(lambda: not writer._writer.is_alive(), what="stuck writer finished")

    # Next start: the spool is replayed; the event that did commit late comes again,
    # which an idempotent store absorbs.
    store2 = FakeStore()
    writer2 = BatchWriter(store2, spool_dir, Metrics(CollectorRegistry()),
                          flush_interval=0)
    wait_for(lambda: len(set(store2.written())) == 101, what="replay after restart")
    writer2.close()
    assert sorted(set(store2.written())) == tids(101)
    assert Spool(spool_dir, ListLog()).segments() == []


def test_overflow_while_database_down_hands_over_without_spinning(
    spool_dir: Path, metrics: Metrics
) -> None:
    """Memory full while the database is down: the writer hands the journal over at once
    and then waits for the retry — it does not come straight back (a busy loop would hold
    the GIL and the lock against mail threads)."""
    store = FakeStore()
    store.down = True
    writer = BatchWriter(store, spool_dir, metrics, max_batch=5, flush_interval=0,
                         retry_interval=60, high_water=10, logger=ListLog())
    steps = [0]
    real_step = writer._step

    def counting(batch: Any) -> None:
        steps[0] += 1
        real_step(batch)

    writer._step = counting  # type: ignore[method-assign]
    try:
        for i in range(200):
            writer.submit(make_message(i))
        wait_for(lambda: not writer._behind and not writer._queue, what="handed over")
        before = steps[0]
        time.sleep(0.5)  # measuring idleness: nothing to poll for
        assert steps[0] - before <= 2, f"{steps[0] - before} steps in 0.5 s while waiting"
        assert Spool(spool_dir, ListLog()).count() == 200
    finally:
        writer.close(timeout=5)
    store.down = False
    writer2 = BatchWriter(store, spool_dir, Metrics(CollectorRegistry()), flush_interval=0)
    wait_for(lambda: len(set(store.written())) == 200, what="replayed after restart")
    writer2.close()


def test_stalled_write_is_reported_and_interrupted(spool_dir: Path, metrics: Metrics) -> None:
    """A database that stops answering (not refusing): past write_timeout the writer says
    store_unavailable, counts a stall, and interrupts the write; the events are replayed."""
    store = FakeStore()
    store.gate = threading.Event()
    interrupted: list[bool] = []

    def interrupt() -> None:
        interrupted.append(True)
        store.down = True  # what an interrupted write raises: StoreUnavailable
        assert store.gate is not None
        store.gate.set()

    store.interrupt = interrupt  # type: ignore[attr-defined]
    log = ListLog()
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=0, retry_interval=0.05,
                         write_timeout=0.3, logger=log)
    try:
        for i in range(5):
            writer.submit(make_message(i))
        wait_for(lambda: interrupted, what="the stalled write interrupted")
        assert not writer.healthy
        assert sample(metrics, "trackmilter_store_stalls_total") == 1
        assert "store_unavailable" in log.events()
        store.gate = None
        store.down = False
        wait_for(lambda: sorted(set(store.written())) == tids(5), what="events replayed")
    finally:
        writer.close(timeout=5)
    assert Spool(spool_dir, ListLog()).segments() == []


@PG_SKIP
def test_frozen_postgresql_write_is_interrupted_and_replayed(
    request: pytest.FixtureRequest, spool_dir: Path, metrics: Metrics
) -> None:
    """PostgreSQL stops answering mid-run (every byte held, nothing closed): its own
    statement_timeout cannot fire, so the writer's deadline does: the write is interrupted
    within write_timeout, the events wait on disk, and are stored once it answers again."""
    from trackmilter.store import upgrade

    schema: str = request.getfixturevalue("pg_schema")
    proxy: SocketProxy = request.getfixturevalue("pg_proxy")
    direct = with_schema(PG_URL, schema)
    upgrade(direct)
    proxy.up()
    store = SQLStore(via_proxy(direct, proxy), statement_timeout=60)
    log = ListLog()
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=0, retry_interval=0.2,
                         write_timeout=0.5, logger=log)
    try:
        writer.submit(make_message(0))
        wait_for(lambda: row_counts(direct)["messages"] == 1, what="first write")
        proxy.freeze()
        start = time.monotonic()
        for i in range(1, 21):
            writer.submit(make_message(i))
        wait_for(lambda: sample(metrics, "trackmilter_store_stalls_total") == 1,
                 what="the stall reported")
        # Interrupted at 0.5 s; the pool's pre-ping then tries one new connection, which
        # libpq's connect_timeout bounds.
        wait_for(lambda: writer._write_started is None, timeout=DEFAULT_CONNECT_TIMEOUT + 5,
                 what="the write interrupted")
        assert time.monotonic() - start < 0.5 + DEFAULT_CONNECT_TIMEOUT + 3
        assert "store_unavailable" in log.events()
        proxy.thaw()
        wait_for(lambda: row_counts(direct)["messages"] == 21, what="replayed after thaw")
    finally:
        proxy.thaw()
        writer.close(timeout=5)
        store.close()


def test_full_disk_keeps_events_in_memory_then_stores_them(
    spool_dir: Path, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal cannot be written and the database is down: events wait in memory
    (bounded: beyond it they are dropped and counted), and reach the database once it is
    back."""
    import errno

    store = FakeStore()
    store.down = True
    log = ListLog()
    writer = BatchWriter(store, spool_dir, metrics, max_batch=5, flush_interval=0,
                         retry_interval=0.05, high_water=10, overflow_limit=10, logger=log)
    real_append = writer._journal.append

    def full(line: bytes) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer._journal, "append", full)
    try:
        for i in range(30):
            writer.submit(make_message(i))
        assert "journal_write_failed" in log.events()
        assert sample(metrics, "trackmilter_store_journal_failures_total") == 30
        dropped = sample(metrics, "trackmilter_store_events_dropped_total")
        assert dropped == 10  # 20 fit in memory (queue + held), the rest are counted
        monkeypatch.setattr(writer._journal, "append", real_append)
        store.down = False
        wait_for(lambda: len(set(store.written())) == 20, what="held events stored")
    finally:
        writer.close(timeout=5)
    assert sorted(set(store.written())) == tids(20)


def test_unusable_spool_directory(tmp_path: Path, metrics: Metrics) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreConfigError, match="spool directory"):
        BatchWriter(FakeStore(), tmp_path / "file" / "spool", metrics)


def test_spool_failure_counts_dropped_events(spool_dir: Path, metrics: Metrics) -> None:
    store = FakeStore()
    store.down = True
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=60, logger=ListLog())
    spool_dir.rmdir()
    spool_dir.write_text("now a file: the spool cannot be written")
    writer.submit(make_message(0))
    writer.close()
    assert sample(metrics, "trackmilter_store_events_dropped_total") == 1


def test_corrupt_spool_from_previous_run(tmp_path: Path, metrics: Metrics) -> None:
    from trackmilter.store import upgrade

    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    seg = spool_dir / "spool-00000000000000000001-1-1.jsonl"
    from trackmilter.store.spool import encode

    seg.write_bytes(encode(make_message(1)) + b"{not json\n" + encode(make_message(2)) + b'{"ki')
    store = SQLStore(url)
    log = ListLog()
    writer = BatchWriter(store, spool_dir, metrics, flush_interval=0, logger=log)
    try:
        wait_for(lambda: not seg.exists(), what="spool replayed")
    finally:
        writer.close()
        store.close()
    assert row_counts(url)["messages"] == 2
    assert (spool_dir / (seg.name + ".bad")).read_bytes() == b'{not json\n{"ki\n'
    assert [e for e in log.events() if e == "spool_line_corrupt"] == ["spool_line_corrupt"] * 2
    assert sample(metrics, "trackmilter_store_spool_replayed_total") == 2


# -- real outages --------------------------------------------------------------------------


@dataclass
class Outage:
    """A database that a test can take away and give back, for real."""

    store_url: str  # what the writer's store connects to
    check_url: str  # a direct way in, for counting rows
    starts_down: bool
    down_fn: Any = None
    up_fn: Any = None
    cleanup: list[Any] = field(default_factory=list)

    def down(self) -> None:
        self.down_fn()

    def up(self) -> None:
        self.up_fn()


def _sqlite_missing_directory(tmp_path: Path) -> Outage:
    from trackmilter.store import upgrade

    url = f"sqlite:///{tmp_path}/db/t.db"

    def up() -> None:
        (tmp_path / "db").mkdir()
        upgrade(url)

    return Outage(url, url, starts_down=True, up_fn=up)


def _sqlite_locked(tmp_path: Path) -> Outage:
    from trackmilter.store import upgrade

    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    holder: list[sqlite3.Connection] = []

    def down() -> None:
        # Another process holding the write lock (a backup, an admin's sqlite3 shell).
        conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        holder.append(conn)

    def up() -> None:
        conn = holder.pop()
        conn.execute("ROLLBACK")
        conn.close()

    def release() -> None:
        for conn in holder:
            conn.close()

    outage = Outage(url, url, starts_down=False, down_fn=down, up_fn=up)
    outage.cleanup.append(release)
    return outage


def _postgresql_proxy(request: pytest.FixtureRequest, starts_down: bool) -> Outage:
    from trackmilter.store import upgrade

    schema: str = request.getfixturevalue("pg_schema")
    proxy: SocketProxy = request.getfixturevalue("pg_proxy")
    direct = with_schema(PG_URL, schema)
    upgrade(direct)
    if not starts_down:
        proxy.up()
    return Outage(via_proxy(direct, proxy), direct, starts_down=starts_down,
                  down_fn=proxy.down, up_fn=proxy.up)


@pytest.fixture(
    params=[
        pytest.param("sqlite-missing-directory", id="sqlite-missing-directory"),
        pytest.param("sqlite-locked", id="sqlite-locked"),
        pytest.param("postgresql-connection-cut", id="postgresql-connection-cut", marks=PG_SKIP),
        pytest.param("postgresql-down-at-start", id="postgresql-down-at-start", marks=PG_SKIP),
    ]
)
def outage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outage]:
    kind = request.param
    if kind == "sqlite-missing-directory":
        o = _sqlite_missing_directory(tmp_path)
    elif kind == "sqlite-locked":
        o = _sqlite_locked(tmp_path)
    else:
        o = _postgresql_proxy(request, starts_down=kind.endswith("at-start"))
    yield o
    for fn in o.cleanup:
        fn()


def test_outage_spools_and_replays_without_loss_or_duplicates(
    outage: Outage, tmp_path: Path, metrics: Metrics
) -> None:
    store = SQLStore(outage.store_url, busy_timeout=0.05)
    spool_dir = tmp_path / "spool"
    writer = BatchWriter(store, spool_dir, metrics, max_batch=4, flush_interval=0.005,
                         retry_interval=0.05, logger=ListLog())
    try:
        before = 0
        if not outage.starts_down:
            for i in range(3):
                writer.submit(make_message(i))
            wait_for(lambda: row_counts(outage.check_url)["messages"] == 3, what="normal write")
            before = 3
            outage.down()

        for i in range(before, before + 10):
            writer.submit(make_message(i, rcpts=("a@example.com", "b@example.com")))
        wait_for(lambda: sample(metrics, "trackmilter_store_spool_events") >= 10,
                 what="events spooled during the outage")
        assert not writer.healthy
        assert sample(metrics, "trackmilter_store_write_failures_total") >= 1

        outage.up()
        for i in range(before + 10, before + 12):
            writer.submit(make_message(i))
        total = before + 12
        wait_for(lambda: row_counts(outage.check_url)["messages"] == total,
                 what="replay after the database came back")
        assert writer.flush(5)
        wait_for(lambda: Spool(spool_dir, ListLog()).segments() == [], what="spool emptied")
    finally:
        writer.close(timeout=5)
        store.close()

    counts = row_counts(outage.check_url)
    assert counts == {"messages": total, "recipients": total + 10, "links": 0,
                      "events": total + 10}
    assert sample(metrics, "trackmilter_store_spool_replayed_total") >= 10
    assert sample(metrics, "trackmilter_store_spool_events") == 0
    assert sample(metrics, "trackmilter_store_events_dropped_total") == 0
    assert writer.healthy
    view_store = SQLStore(outage.check_url)
    try:
        assert {v.tracking_id for v in view_store.lookup("a@example.com", limit=1000)} == set(
            tids(10, before)
        )
    finally:
        view_store.close()
