"""Deliveries stored before their message (a milter's journal or spool replayed after
`trackmilter maillog` stored the deliveries): tied when the message is written, by the rules
a delivery written after it would be tied by (store/backfill.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import Connection, func, select
from tests.unit.store.store_helpers import (
    PG_SKIP,
    PG_URL,
    T0,
    make_message,
    row_counts,
    with_schema,
)
from tests.unit.store.test_store_hits import TID, BurstReviser, hit

from trackmilter.cli import main
from trackmilter.model import DeliveryObserved, DeliveryStatus, MessageRecorded, Reinjected
from trackmilter.store import MessageView, SQLStore, StoreError, upgrade
from trackmilter.store.backfill import INDEX, _Lookup
from trackmilter.store.batch import Batch
from trackmilter.store.engine import make_engine
from trackmilter.store.migrate import alembic_config
from trackmilter.store.schema import events

QID = "4F3A21C0B9"
S = T0 + timedelta(hours=2)  # when the late message started


def late(n: int = 1, queue_id: str = QID, started: datetime = S,
         rcpts: tuple[str, ...] = ("bob@example.com",)) -> MessageRecorded:
    return make_message(n, queue_id=queue_id, started=started, rcpts=rcpts)


def line(at: datetime, rcpt: str = "bob@example.com", queue_id: str = QID, mta: str = "mx1",
         status: DeliveryStatus = DeliveryStatus.SENT) -> DeliveryObserved:
    return DeliveryObserved(queue_id, rcpt, status, at, dsn="2.0.0",
                            relay="mx.example.net[192.0.2.9]:25",
                            text="250 2.0.0 Ok: queued as 9C1D2E3F4A", mta=mta)


def deliveries(view: MessageView) -> list[tuple[str | None, datetime]]:
    return sorted((e.recipient, e.at) for e in view.events if e.kind == "delivery")


def deliveries_of(lines: Sequence[DeliveryObserved]) -> list[tuple[str | None, datetime]]:
    return sorted((d.recipient, d.at) for d in lines)


def by_tid(store: SQLStore, ident: str = QID) -> dict[str, list[tuple[str | None, datetime]]]:
    return {v.tracking_id: deliveries(v) for v in store.lookup(ident)}


def untied(url: str) -> int:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)
                                    .where(events.c.message.is_(None))).scalar_one())
    finally:
        engine.dispose()


def status(db_url: str, tmp_path: Path, ident: str) -> str:
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[database]\nurl = "{db_url}"\n')
    res = CliRunner().invoke(main, ["--config", str(cfg), "status", "--explain", ident])
    assert res.exit_code == 0, res.output
    return res.stdout


def test_delivery_stored_first_is_shown_on_the_message_written_later(
        store: SQLStore, db_url: str, tmp_path: Path) -> None:
    sent = S + timedelta(seconds=3)
    store.write([line(sent)])
    assert store.lookup(QID) == [] and untied(db_url) == 1
    store.write([late()])
    [view] = store.lookup(QID)
    assert deliveries(view) == [("bob@example.com", sent)]
    assert untied(db_url) == 0
    [by_rcpt] = store.lookup("bob@example.com")
    assert by_rcpt.tracking_id == view.tracking_id
    text = status(db_url, tmp_path, "bob@example.com")
    assert "accepted by the remote server mx.example.net[192.0.2.9]:25" in text
    assert "no evidence yet" not in text


def test_the_window_and_the_mta_decide_as_for_a_line_written_later(
        store: SQLStore, db_url: str) -> None:
    """The short queue id is reused: its lines from long before the message started are
    another message's; another MTA's lines under it are another queue's."""
    mine = [
        line(S + timedelta(seconds=1)),
        line(S + timedelta(days=2), status=DeliveryStatus.DEFERRED),  # still queued
        line(S - timedelta(minutes=4)),  # a clock a little behind (CLOCK_SLACK)
        line(S + timedelta(seconds=2), mta=""),  # a follower that names no MTA
        line(S + timedelta(seconds=3), rcpt="x" * 600 + "@example.com"),  # key digested
    ]
    others = [
        line(S - timedelta(hours=1)),  # the queue id's previous message
        line(S - timedelta(minutes=6)),  # beyond the slack
        line(S + timedelta(seconds=1), mta="mx2"),
        line(S + timedelta(seconds=3), rcpt="y" * 600 + "@example.com", mta="mx2"),
        line(S + timedelta(seconds=1), queue_id="4F3A21C0B8"),
    ]
    store.write([*mine, *others])
    store.write([late()])
    [view] = store.lookup(QID)
    assert deliveries(view) == sorted((e.recipient.lower()[:512], e.at) for e in mine)
    assert untied(db_url) == len(others)


def test_replays_change_nothing(store: SQLStore, db_url: str) -> None:
    """Journals and spools replay: the message, the deliveries, both, in either order."""
    d1, d2 = line(S + timedelta(seconds=1)), line(S + timedelta(minutes=5), rcpt="c@example.com")
    m = late(rcpts=("bob@example.com", "c@example.com"))
    store.write([d1, d2])
    store.write([m])
    expected = by_tid(store)
    counts = row_counts(db_url)
    assert len(expected[m.tracking_id]) == 2
    for replay in ([m], [m, m], [d1], [d2, d1], [d1, m], [m, d2], [d1, m, d2, m]):
        store.write(replay)
        assert by_tid(store) == expected, replay
    assert row_counts(db_url) == counts
    assert untied(db_url) == 0


def test_a_batch_with_both_orders(store: SQLStore, db_url: str) -> None:
    """One write: a message whose delivery was stored before, and messages whose
    deliveries come with them, before and after them in the batch."""
    m1, m2, m3 = (late(n, queue_id=f"4F3A21C0C{n}", started=S + timedelta(minutes=n))
                  for n in (1, 2, 3))
    d1, d2, d3 = (line(m.started_at + timedelta(seconds=2), queue_id=m.queue_id)
                  for m in (m1, m2, m3))
    store.write([d1])
    store.write([d2, m1, m2, m3, d3])
    for m, d in ((m1, d1), (m2, d2), (m3, d3)):
        assert by_tid(store, m.queue_id) == {m.tracking_id: [("bob@example.com", d.at)]}
    assert untied(db_url) == 0


def test_each_late_message_of_a_reused_queue_id_gets_its_own_lines(
        store: SQLStore, db_url: str) -> None:
    """Two messages with the same short queue id, both late, in one batch and apart."""
    first, second = late(1), late(2, started=S + timedelta(hours=3))
    a, b = line(S + timedelta(seconds=2)), line(S + timedelta(hours=3, seconds=2))
    store.write([a, b])
    store.write([first, second])
    assert by_tid(store) == {first.tracking_id: [("bob@example.com", a.at)],
                             second.tracking_id: [("bob@example.com", b.at)]}


def test_a_line_taken_by_an_older_message_goes_to_the_late_one(
        store: SQLStore, db_url: str) -> None:
    """The queue id's previous message was stored: the late message's line was tied to it
    when written (the latest message that had started); written, the late message takes
    it, and the older one keeps its own lines."""
    older, newer = late(1, started=S - timedelta(hours=5)), late(2)
    own = line(older.started_at + timedelta(seconds=2))
    store.write([older, own])
    theirs = [line(S + timedelta(seconds=2)), line(S + timedelta(hours=1), rcpt="c@example.com")]
    store.write(theirs)
    assert by_tid(store)[older.tracking_id] == [("bob@example.com", own.at),
                                                *deliveries_of(theirs)]
    store.write([newer])
    assert by_tid(store) == {older.tracking_id: [("bob@example.com", own.at)],
                             newer.tracking_id: deliveries_of(theirs)}
    for replay in ([newer], theirs, [older], [own, *theirs, newer]):
        store.write(replay)
        assert by_tid(store)[newer.tracking_id] == deliveries_of(theirs), replay


def test_a_relinked_line_stays_with_the_original_message(store: SQLStore) -> None:
    """A content filter's re-injected copy's line, tied to the original message by its
    hand-off (store/relink.py), is not taken by a later message that reuses the copy's
    queue id."""
    old = late(1, queue_id="4A1B21C0A1", started=S - timedelta(seconds=1))
    copy = line(S + timedelta(seconds=1))  # under QID, the re-injected copy's queue id
    store.write([old, copy])
    store.write([Reinjected(old.queue_id, QID, S + timedelta(seconds=2), ("bob@example.com",),
                            "mx1")])
    assert by_tid(store, old.queue_id)[old.tracking_id] == [("bob@example.com", copy.at)]
    store.write([late(2, started=S + timedelta(minutes=1))])  # QID again, later
    assert by_tid(store, old.queue_id)[old.tracking_id] == [("bob@example.com", copy.at)]


def test_the_hits_are_judged_again(db_url: str) -> None:
    """A late message's deliveries reach the hit reviser as a delivery written after it
    would (test_store_hits: a hit within a minute of acceptance is a machine's)."""
    upgrade(db_url)
    reviser = BurstReviser()
    store = SQLStore(db_url, reviser=reviser)
    try:
        msg = make_message(1, tracking_id=TID, queue_id=QID)
        sent_at = msg.started_at + timedelta(seconds=5)
        store.write([hit(1, (sent_at - T0).total_seconds() + 20, verdict="unknown")])
        store.write([line(sent_at)])
        assert reviser.calls == []
        store.write([msg])
        assert reviser.calls and reviser.calls[-1][1] == sent_at
        (view,) = store.lookup(TID)
        assert view.hits[0].verdict == "machine"
    finally:
        store.close()


def test_the_lookups_go_by_index(store: SQLStore, db_url: str) -> None:
    # A store in use: most deliveries tied, some never (mail the milter did not see).
    store.write([m for n in range(500) for m in (
        make_message(n), line(T0 + timedelta(minutes=n, seconds=1), queue_id=f"Q{n:08X}"),
        line(T0 + timedelta(minutes=n, seconds=2), queue_id=f"U{n:08X}"))])
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("ANALYZE events, messages")  # as autovacuum does
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # small tables
                explain = "EXPLAIN "
            else:
                explain = "EXPLAIN QUERY PLAN "
            lookup = _Lookup.of(conn.dialect)
            since = lookup._since(T0)
            plan = "\n".join(str(r) for r in conn.exec_driver_sql(
                explain + lookup.sql("untied", 2), (QID, "4F3A21C0B8", "delivery", since,
                                                    QID, "4F3A21C0B8")))
            plan += "\n".join(str(r) for r in conn.exec_driver_sql(
                explain + lookup.sql("tied", 2), (1, 2, "delivery", since)))
    finally:
        engine.dispose()
    for index in (INDEX, "ix_messages_queue_id", "ix_events_message"):
        assert index in plan
    assert "SCAN events" not in plan and "Seq Scan" not in plan


def test_migration_0007_on_a_store_with_untied_deliveries(db_url: str) -> None:
    """Deliveries stored untied before the upgrade are found by a message written after."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0006")
            # Deliveries only: writing a message at 0006 would look for the index.
            Batch.build([line(S + timedelta(seconds=1)), line(T0, queue_id="4F3A21C0B8")]
                         ).write(conn)
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")  # 0007, and what follows
        store = SQLStore(db_url)
        try:
            store.write([late()])
            [view] = store.lookup(QID)
            assert len(deliveries(view)) == 1
        finally:
            store.close()
        assert untied(db_url) == 1
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0006")
        with engine.connect() as conn:
            assert INDEX not in _index_names(conn)
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        with engine.connect() as conn:
            assert INDEX in _index_names(conn)
    finally:
        engine.dispose()


def _index_names(conn: Connection) -> set[str]:
    if conn.dialect.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'events'" \
              " AND schemaname = current_schema()"
    return set(conn.exec_driver_sql(sql).scalars())


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    url = with_schema(PG_URL, pg_schema)
    upgrade(url)
    return url


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[SQLStore]:
    s = SQLStore(pg_url)
    try:
        yield s
    finally:
        s.close()


@PG_SKIP
@pytest.mark.parametrize("first", ["message", "delivery"])
def test_a_message_and_its_delivery_written_at_the_same_time(
        pg_store: SQLStore, pg_url: str, first: str) -> None:
    """PostgreSQL: neither transaction sees the other's uncommitted row; the second waits
    for the first (backfill.serialize) and then does."""
    m, d = late(), line(S + timedelta(seconds=1))
    held, other = ([m], [d]) if first == "message" else ([d], [m])
    done = threading.Event()
    errors: list[StoreError] = []

    def write() -> None:
        try:
            pg_store.write(other)
        except StoreError as e:  # pragma: no cover - reported below
            errors.append(e)
        done.set()

    engine = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            with conn.begin():
                Batch.build(held).write(conn)
                thread = threading.Thread(target=write)
                thread.start()
                waited = not done.wait(0.5)
            thread.join(10)
    finally:
        engine.dispose()
    assert done.is_set() and not errors
    [view] = pg_store.lookup(QID)
    assert deliveries(view) == [("bob@example.com", d.at)]
    assert waited


@PG_SKIP
def test_writers_of_messages_do_not_wait_for_each_other(pg_store: SQLStore, pg_url: str) -> None:
    engine = make_engine(pg_url)
    impatient = SQLStore(pg_url, statement_timeout=5)
    try:
        with engine.connect() as conn, conn.begin():
            Batch.build([late(1)]).write(conn)
            impatient.write([late(2, queue_id="4F3A21C0C2")])  # times out if it waited
    finally:
        impatient.close()
        engine.dispose()
    assert len(pg_store.lookup("bob@example.com")) == 2
