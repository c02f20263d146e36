"""`trackmilter db copy`: a whole store into an empty one, counted on both sides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.unit.store.test_report_view import fill

from trackmilter.cli import main
from trackmilter.store import SQLStore, StoreError, upgrade
from trackmilter.store.copy import copy_store


def _source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'src.db'}"
    upgrade(url)
    store = SQLStore(url)
    try:
        fill(store)
    finally:
        store.close()
    return url


def test_copy_keeps_every_row_and_the_views(tmp_path: Path, db_url: str) -> None:
    source = _source(tmp_path)
    if db_url == source:
        pytest.skip("same database")
    counts = copy_store(source, db_url)
    assert counts["messages"] == 3 and counts["hits"] == 4 and counts["events"] >= 4
    a, b = SQLStore(source), SQLStore(db_url)
    try:
        for ident in ("t000000000000001", "b@example.net", "c@example.net"):
            assert [v.to_dict() for v in a.lookup(ident)] == [
                v.to_dict() for v in b.lookup(ident)], ident
        # New rows get new ids: the destination's sequences were moved past the copy.
        from tests.unit.store.store_helpers import make_message

        b.write([make_message(9, tracking_id="t000000000000009", queue_id="4Q9")])
        assert b.lookup("t000000000000009")
    finally:
        a.close()
        b.close()
    with pytest.raises(StoreError, match="already holds messages"):
        copy_store(source, db_url)


def test_the_command(tmp_path: Path) -> None:
    source = _source(tmp_path)
    cfg = tmp_path / "tm.toml"
    cfg.write_text(f'[database]\nurl = "{source}"\n')
    dest = f"sqlite:///{tmp_path / 'dest.db'}"
    res = CliRunner().invoke(main, ["db", "copy", "--config", str(cfg), dest], env={})
    assert res.exit_code == 0, res.output
    assert res.output.startswith("copied 3 messages, ")
    again = CliRunner().invoke(main, ["db", "copy", "--config", str(cfg), dest], env={})
    assert again.exit_code == 1 and "already holds messages" in again.output
    assert os.path.exists(tmp_path / "dest.db")


def test_a_refused_copy_leaves_the_destination_as_it_was(tmp_path: Path) -> None:
    """A copy pointed at a live store by mistake refuses before migrating it."""
    from alembic import command
    from sqlalchemy import text

    from trackmilter.store.engine import make_engine
    from trackmilter.store.migrate import alembic_config, current_revision

    source = _source(tmp_path)
    live = f"sqlite:///{tmp_path / 'live.db'}"
    engine = make_engine(live)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0007")
            conn.execute(text("INSERT INTO events (kind, at) VALUES ('delivery', '2026-01-01')"))
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match="already holds events"):
        copy_store(source, live)
    assert current_revision(live) == "0007"


def test_urls_in_messages_hide_every_password() -> None:
    from trackmilter.store.engine import describe

    text = describe("postgresql+psycopg://u:s3cret@h/db?password=other&sslpassword=x&host=/r")
    assert "s3cret" not in text and "other" not in text and "sslpassword=x" not in text
    assert "host=%2Fr" in text  # the rest stays as it was
