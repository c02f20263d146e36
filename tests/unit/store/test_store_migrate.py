"""Migrations: upgrade creates exactly schema.py's tables; the store refuses a stale schema."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select
from sqlalchemy.schema import CreateIndex

from trackmilter.store import (
    SchemaTooOld,
    SQLStore,
    StoreConfigError,
    current_revision,
    head_revision,
    upgrade,
)
from trackmilter.store.engine import make_engine
from trackmilter.store.migrate import MIGRATIONS_DIR, VERSION_TABLE, alembic_config
from trackmilter.store.schema import events, messages, metadata

UNTIED = "ix_events_untied_queue_id"
TABLES = {"messages", "recipients", "events", VERSION_TABLE, "hits", "hit_verdicts",
          "webhook_outbox"}


def test_upgrade_creates_schema(db_url: str) -> None:
    assert current_revision(db_url) is None
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == TABLES
            # The hand-written migration and schema.py must describe the same database.
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            with warnings.catch_warnings():
                if conn.dialect.name == "sqlite":
                    # SQLite's expression indexes cannot be reflected: compared below.
                    warnings.filterwarnings("ignore", f".*{UNTIED}.*")
                assert compare_metadata(ctx, metadata) == []
            if conn.dialect.name == "sqlite":
                [sql] = conn.exec_driver_sql(
                    f"SELECT sql FROM sqlite_master WHERE name = '{UNTIED}'").scalars()
                [index] = [i for i in events.indexes if i.name == UNTIED]
                assert sql == str(CreateIndex(index).compile(dialect=conn.dialect)).strip()
    finally:
        engine.dispose()


def test_upgrade_twice_is_a_no_op(db_url: str) -> None:
    upgrade(db_url)
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()


def test_sqlite_upgrade_uses_wal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    upgrade(url)
    import sqlite3

    conn = sqlite3.connect(tmp_path / "t.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("make_dir", "mode", "message"),
    [
        pytest.param(False, None, "does not exist", id="missing-directory"),
        pytest.param(True, 0o500, "not writable", id="read-only-directory"),
    ],
)
def test_sqlite_upgrade_names_unusable_directory(
    tmp_path: Path, make_dir: bool, mode: int | None, message: str
) -> None:
    directory = tmp_path / "db"
    if make_dir:
        directory.mkdir()
    if mode is not None:
        if os.geteuid() == 0:
            pytest.skip("root can write to read-only directories")
        directory.chmod(mode)
    with pytest.raises(StoreConfigError, match=message) as info:
        upgrade(f"sqlite:///{directory}/t.db")
    assert str(directory) in str(info.value)
    assert not (directory / "t.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("not a url", id="garbage"),
        pytest.param("mysql://localhost/x", id="unsupported-backend"),
        pytest.param("postgresql+nosuchdriver://localhost/x", id="unknown-driver"),
    ],
)
def test_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(StoreConfigError):
        upgrade(url)
    with pytest.raises(StoreConfigError):
        SQLStore(url)


def test_store_refuses_database_without_schema(db_url: str) -> None:
    store = SQLStore(db_url)
    try:
        with pytest.raises(SchemaTooOld, match="run `trackmilter db upgrade`"):
            store.ping()
        with pytest.raises(SchemaTooOld):
            store.lookup("x")
    finally:
        store.close()


def test_store_refuses_older_schema(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
    finally:
        engine.dispose()
    assert current_revision(db_url) is None
    store = SQLStore(db_url)
    try:
        with pytest.raises(SchemaTooOld, match="trackmilter db upgrade"):
            store.ping()
    finally:
        store.close()


def test_links_move_into_their_message_and_back(db_url: str) -> None:
    # 0006 folds table `links` into messages.links; a store written before keeps its links.
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0005")
            for mid, tid in ((1, "a" * 16), (2, "b" * 16), (3, "c" * 16)):
                conn.exec_driver_sql(
                    "INSERT INTO messages (id, tracking_id, direction, end_reason, rewritten,"
                    " pixel, tracking_header, link_count, started_at, finished_at) VALUES"
                    f" ({mid}, '{tid}', 'outgoing', 'queued', false, false, false, 0,"
                    " '2026-11-27 10:00:00', '2026-11-27 10:00:01')")
            conn.exec_driver_sql(
                "INSERT INTO links (message, idx, url) VALUES (1, 2, 'https://e.example/2'),"
                " (1, 1, 'https://e.example/1?a=1&b=\u00e9'), (3, 7, 'https://f.example/')")
            command.upgrade(alembic_config(conn), "0006")
        with engine.connect() as conn:
            got = dict(conn.execute(select(messages.c.id, messages.c.links)).all())
            assert "links" not in inspect(conn).get_table_names()
        assert got == {1: [[1, "https://e.example/1?a=1&b=\u00e9"], [2, "https://e.example/2"]],
                       2: None, 3: [[7, "https://f.example/"]]}
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        with engine.connect() as conn:
            back = sorted(conn.exec_driver_sql("SELECT message, idx, url FROM links").all())
            assert "links" not in {c["name"] for c in inspect(conn).get_columns("messages")}
        assert [tuple(r) for r in back] == [(1, 1, "https://e.example/1?a=1&b=\u00e9"),
                                            (1, 2, "https://e.example/2"),
                                            (3, 7, "https://f.example/")]
    finally:
        engine.dispose()


def test_store_refuses_unknown_newer_schema(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    finally:
        engine.dispose()
    store = SQLStore(db_url)
    try:
        with pytest.raises(StoreConfigError, match="newer version"):
            store.ping()
    finally:
        store.close()


def test_migrations_ship_as_package_data() -> None:
    # pyproject's package-data globs: store/migrations/*.py and store/migrations/versions/*.py
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert not (MIGRATIONS_DIR / "__init__.py").exists()


def test_revisions_known_without_alembic_are_alembics_history() -> None:
    """The schema check reads revisions from the files' names; Alembic reads the files."""
    from alembic.script import ScriptDirectory

    from trackmilter.store.migrate import revisions

    script = ScriptDirectory.from_config(alembic_config())
    chain = [r.revision for r in script.walk_revisions()][::-1]  # walk: newest first
    assert list(revisions()) == chain
    assert script.get_current_head() == head_revision() == chain[-1]
