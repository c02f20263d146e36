"""`trackmilter db copy`: every row of one store into another, empty one — typically the
embedded SQLite into the PostgreSQL that several servers will share.

Rows keep their ids (the foreign keys between messages, recipients, events, hits and
verdicts stay right without a lookup), tables are copied parents first, in chunks, and each
table is counted on both sides at the end: a copy that does not match raises. PostgreSQL's
id sequences are moved past the copied ids, so new rows do not collide. The source is only
read; stop the daemons writing to it first (or copy again: the destination must be empty).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, Table, exc, func, insert, inspect, select, text

from trackmilter.store.base import StoreConfigError
from trackmilter.store.engine import describe, make_engine, parse_url, translate
from trackmilter.store.migrate import check_schema, upgrade
from trackmilter.store.schema import (
    events,
    hit_verdicts,
    hits,
    messages,
    recipients,
    webhook_outbox,
)

# Parents before children (recipients and events point at messages, verdicts at hits).
TABLES: tuple[Table, ...] = (messages, recipients, events, hits, hit_verdicts, webhook_outbox)
CHUNK = 2000


def copy_store(source: str, destination: str,
               progress: Callable[[str, int], None] = lambda table, n: None) -> dict[str, int]:
    """Copy every row of `source` into `destination` (schema created or upgraded there, and
    it must hold no rows); return the rows copied per table. StoreError on any problem."""
    src_url, dst_url = parse_url(source), parse_url(destination)
    if describe(src_url) == describe(dst_url):
        raise StoreConfigError("source and destination are the same database")
    _refuse_unless_empty(dst_url)  # before upgrading: a live store is left as it is
    upgrade(destination)
    src, dst = make_engine(src_url), make_engine(dst_url)
    try:
        with src.connect() as s, dst.begin() as d:
            check_schema(s, describe(src_url))
            for table in TABLES:
                if d.execute(select(func.count()).select_from(table)).scalar():
                    raise StoreConfigError(
                        f"{describe(dst_url)} already holds {table.name}: copy into an empty "
                        "database (a fresh one after `trackmilter db upgrade`)")
            counts = {t.name: _copy_table(s, d, t, progress) for t in TABLES}
            for table in TABLES:
                there = d.execute(select(func.count()).select_from(table)).scalar() or 0
                if there != counts[table.name]:
                    raise StoreConfigError(f"{table.name}: {counts[table.name]} rows read, "
                                           f"{there} in {describe(dst_url)}: nothing copied")
            _advance_sequences(d, dst)
        return counts
    except exc.SQLAlchemyError as e:
        raise translate(e, dst_url) from e
    finally:
        src.dispose()
        dst.dispose()


def _refuse_unless_empty(url: Any) -> None:
    """StoreConfigError when the destination already holds rows of ours (any revision)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            there = set(inspect(conn).get_table_names())
            for table in TABLES:
                # Our own table names, not input: nothing to quote.
                if table.name in there and conn.execute(
                        text(f"SELECT count(*) FROM {table.name}")).scalar():
                    raise StoreConfigError(
                        f"{describe(url)} already holds {table.name}: copy into an empty "
                        "database (a fresh one after `trackmilter db upgrade`)")
    except exc.SQLAlchemyError as e:
        raise translate(e, url) from e
    finally:
        engine.dispose()


def _copy_table(s: Connection, d: Connection, table: Table,
                progress: Callable[[str, int], None]) -> int:
    last, done = None, 0
    while True:
        query = select(table).order_by(table.c.id).limit(CHUNK)
        if last is not None:
            query = query.where(table.c.id > last)
        rows = [dict(r._mapping) for r in s.execute(query)]
        if not rows:
            return done
        d.execute(insert(table), rows)
        done += len(rows)
        last = rows[-1]["id"]
        progress(table.name, done)


def _advance_sequences(d: Connection, dst: Engine) -> None:
    """PostgreSQL hands out ids from a sequence that copying with explicit ids did not move."""
    if dst.dialect.name != "postgresql":
        return
    for table in TABLES:
        d.execute(text(
            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
            f"COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"))
