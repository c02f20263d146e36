"""SQLStore on SQLite and PostgreSQL: writes, idempotency, lookups, views, error mapping."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from tests.unit.store.store_helpers import (
    PG_SKIP,
    PG_URL,
    T0,
    make_message,
    row_counts,
    with_schema,
)

from trackmilter.model import RcptOutcome, RecipientRecord
from trackmilter.store import (
    EventRejected,
    MessageView,
    SQLStore,
    StoreConfigError,
    StoreUnavailable,
    upgrade,
)
from trackmilter.store.engine import make_engine


@pytest.fixture
def written(store: SQLStore) -> SQLStore:
    """Three messages: m0 and m2 share a recipient, m1 and m2 share a (reused) queue id."""
    store.write(
        [
            make_message(0, rcpts=("Bob@Example.com",), refused=("x@nowhere.test",),
                         links_=("https://a.example/1", "https://a.example/2")),
            make_message(1, queue_id="4XyZ1", rcpts=("carol@example.com",)),
            make_message(2, queue_id="4XyZ1", rcpts=("bob@example.com", "dave@example.com")),
        ]
    )
    return store


@pytest.mark.parametrize(
    ("ident", "expected"),
    [
        pytest.param("t000000000000000", ["t000000000000000"], id="tracking-id"),
        pytest.param("T000000000000001", ["t000000000000001"], id="tracking-id-uppercase"),
        pytest.param("<m0@example.org>", ["t000000000000000"], id="message-id-brackets"),
        pytest.param("m1@example.org", ["t000000000000001"], id="message-id-bare"),
        pytest.param(" <m2@example.org> ", ["t000000000000002"], id="message-id-spaces"),
        pytest.param("Q00000000", ["t000000000000000"], id="queue-id"),
        pytest.param("4XyZ1", ["t000000000000002", "t000000000000001"], id="queue-id-reused"),
        pytest.param("BOB@example.COM", ["t000000000000002", "t000000000000000"],
                     id="recipient-any-case"),
        pytest.param("<dave@example.com>", ["t000000000000002"], id="recipient-brackets"),
        pytest.param("x@nowhere.test", ["t000000000000000"], id="refused-recipient"),
        pytest.param("nobody@example.com", [], id="unknown"),
        pytest.param("   ", [], id="blank"),
    ],
)
def test_lookup_by_each_kind_of_ident(written: SQLStore, ident: str, expected: list[str]) -> None:
    assert [v.tracking_id for v in written.lookup(ident)] == expected  # newest first


def test_lookup_limit(written: SQLStore) -> None:
    assert [v.tracking_id for v in written.lookup("bob@example.com", limit=1)] == [
        "t000000000000002"
    ]


def test_view_contents(written: SQLStore) -> None:
    (view,) = written.lookup("t000000000000000")
    assert view.message_id == "m0@example.org"
    assert view.sender == "alice@example.org"
    assert (view.direction, view.end_reason, view.mta) == ("outgoing", "queued", "mx1")
    assert view.started_at == T0 and view.started_at.tzinfo is not None
    assert view.link_count == 2
    assert [(r.address, r.outcome, r.status) for r in view.recipients] == [
        ("bob@example.com", "accepted", ""),
        ("x@nowhere.test", "refused", "5.7.1"),
    ]
    assert [(link.index, link.url) for link in view.links] == [
        (0, "https://a.example/1"),
        (1, "https://a.example/2"),
    ]
    assert [(e.kind, e.recipient, e.status, e.code, e.source) for e in view.events] == [
        ("inline", "bob@example.com", "accepted", "", "mx1"),
        ("inline", "x@nowhere.test", "refused", "5.7.1", "mx1"),
    ]
    assert view.events[1].text == "Relay access denied"


def test_to_dict_is_json_ready(written: SQLStore) -> None:
    (view,) = written.lookup("t000000000000000")
    data = json.loads(json.dumps(view.to_dict()))
    assert data["started_at"] == "2024-05-01T12:00:00+00:00"
    assert data["recipients"][0]["at"] == "2024-05-01T12:00:01+00:00"
    assert data["links"][1] == {"index": 1, "url": "https://a.example/2"}
    assert data["events"][0]["kind"] == "inline"
    assert data["events"][0]["data"] is None


def test_rewrite_is_idempotent(db_url: str, store: SQLStore) -> None:
    batch = [make_message(i, links_=("https://x.example/",)) for i in range(3)]
    store.write(batch)
    before = row_counts(db_url)
    store.write(batch)  # a spool replay after a partial failure
    store.write(batch + batch)  # duplicates inside one batch too
    assert row_counts(db_url) == before == {"messages": 3, "recipients": 3, "links": 3,
                                            "events": 3}


def test_rewrite_updates_outcome(store: SQLStore) -> None:
    store.write([make_message(0)])
    refused = make_message(0, rcpts=(), refused=("bob@example.com",))
    store.write([refused])
    (view,) = store.lookup("t000000000000000")
    assert [(r.address, r.outcome) for r in view.recipients] == [("bob@example.com", "refused")]
    assert [(e.status, e.code) for e in view.events] == [("refused", "5.7.1")]


def test_times_stored_as_utc(store: SQLStore) -> None:
    local = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    store.write([make_message(0, started=local)])
    (view,) = store.lookup("t000000000000000")
    assert view.started_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert view.started_at is not None and view.started_at.utcoffset() == timedelta(0)


def test_events_ordered_by_time(store: SQLStore) -> None:
    msg = make_message(0, rcpts=())
    late = RecipientRecord("z@example.com", RcptOutcome.ACCEPTED, at=T0 + timedelta(seconds=5))
    early = RecipientRecord("a@example.com", RcptOutcome.ACCEPTED, at=T0 + timedelta(seconds=1))
    from dataclasses import replace

    store.write([replace(msg, recipients=(late, early))])
    (view,) = store.lookup("t000000000000000")
    assert [e.recipient for e in view.events] == ["a@example.com", "z@example.com"]


def test_long_values_do_not_break_indexes(store: SQLStore) -> None:
    # PostgreSQL refuses index entries over ~2.7 kB; such input must not make events unstorable.
    long_mid = "<" + "x" * 5000 + "@example.org>"
    long_rcpt = "é" * 3000 + "@example.com"
    store.write([make_message(0, message_id=long_mid, rcpts=(long_rcpt,))])
    assert len(store.lookup("t000000000000000")) == 1


def test_empty_write_does_nothing(store: SQLStore) -> None:
    store.write([])


def test_ping_on_migrated_database(store: SQLStore) -> None:
    store.ping()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite-missing-directory", id="sqlite-missing-directory"),
        pytest.param("postgresql-closed-port", id="postgresql-closed-port", marks=PG_SKIP),
    ],
)
def test_unreachable_database_is_unavailable(tmp_path: Path, kind: str) -> None:
    if kind.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/gone/t.db"
    else:
        url = (
            make_url(PG_URL)
            .set(host="127.0.0.1", port=_closed_port(), query={})
            .render_as_string(hide_password=False)
        )
    store = SQLStore(url)  # does not connect: daemons must start while the DB is down
    try:
        with pytest.raises(StoreUnavailable) as info:
            store.ping()
        with pytest.raises(StoreUnavailable):
            store.write([make_message(0)])
        with pytest.raises(StoreUnavailable):
            store.lookup("x")
    finally:
        store.close()
    assert ("gone" in str(info.value)) or ("127.0.0.1" in str(info.value))


@PG_SKIP
def test_postgresql_statement_timeout_turns_a_held_lock_into_unavailable(
    pg_schema: str,
) -> None:
    # Another session holds the table: without a bound, the writer would wait for as long
    # as it is held (here: the whole test), with events piling up behind it.
    url = with_schema(PG_URL, pg_schema)
    upgrade(url)
    store = SQLStore(url, statement_timeout=0.3)
    holder = make_engine(url)
    try:
        store.write([make_message(0)])
        with holder.connect() as conn, conn.begin():
            # Should the store wait after all, the server ends this lock after 10 s, and the
            # test fails (rather than hangs): the write then succeeds.
            conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = '10s'")
            conn.exec_driver_sql("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            start = time.monotonic()
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                store.write([make_message(1)])
            assert time.monotonic() - start < 5
        store.write([make_message(1)])  # the lock gone, the same store writes again
        assert row_counts(url)["messages"] == 2
    finally:
        holder.dispose()
        store.close()


@PG_SKIP
def test_postgresql_statement_timeout_keeps_options_the_url_sets(
    pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = with_schema(PG_URL, pg_schema)  # options=-csearch_path=...
    engine = make_engine(url, statement_timeout=2.5)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "2500ms"
            assert conn.exec_driver_sql("SHOW search_path").scalar_one() == pg_schema
    finally:
        engine.dispose()
    # An administrator's PGOPTIONS still applies: trackmilter does not set libpq's options.
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=1234kB")
    engine = make_engine(PG_URL, statement_timeout=2.5)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "2500ms"
            assert conn.exec_driver_sql("SHOW work_mem").scalar_one() == "1234kB"
    finally:
        engine.dispose()
    engine = make_engine(url)  # 0: PostgreSQL's own default (none)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "0"
    finally:
        engine.dispose()


def test_postgresql_refuses_nul_as_data(db_url: str, store: SQLStore) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite stores NUL characters")
    with pytest.raises(EventRejected):
        store.write([make_message(0, sender="a\x00b@example.org")])


def test_missing_driver_is_config_error() -> None:
    with pytest.raises(StoreConfigError):
        SQLStore("postgresql+pg8000://localhost/x")


def test_views_are_frozen(written: SQLStore) -> None:
    (view,) = written.lookup("t000000000000001")
    assert isinstance(view, MessageView)
    with pytest.raises(AttributeError):
        view.sender = "x"  # type: ignore[misc]
    hash(view)
