"""What the SQL store's modules share (sql, hits, relink, backfill): text bounds, the
kinds of events, how a delivery finds its message, and the upsert.

A module of its own so that none of them imports another to get at these.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Dialect, Table, select

from trackmilter.store.base import StoreError
from trackmilter.store.schema import messages

# PostgreSQL refuses B-tree index entries over ~2700 bytes; clipping indexed text keeps a
# pathological Message-ID or address from making a whole batch unstorable (4 bytes/char max).
MAX_INDEXED_CHARS = 512

INLINE_KIND = "inline"
DELIVERY_KIND = "delivery"
# A log line may be stamped a little before the milter's clock says the message started
# (two hosts, two clocks, or the log's one-second resolution).
CLOCK_SLACK = timedelta(minutes=5)
STAMP_RESOLUTION = timedelta(seconds=1)


def normalize_address(address: str) -> str:
    """Addresses are stored and looked up lowercased, without angle brackets."""
    return strip_brackets(address).lower()[:MAX_INDEXED_CHARS]


def strip_brackets(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value


def messages_for_deliveries(
    conn: Connection, deliveries: list[tuple[str, str, datetime, str]]
) -> dict[str, int]:
    """events key -> message id, for delivery events whose message is known.

    Postfix reuses short queue ids, and several MTAs may share a store: the message is the
    latest one with that queue id (from that MTA, when both name one) that started before
    the log line; failing that, the first that started within CLOCK_SLACK after it.
    """
    queue_ids = sorted({qid for qid, _, _, _ in deliveries if qid})
    candidates: dict[str, list[tuple[datetime, str, int]]] = defaultdict(list)
    for start in range(0, len(queue_ids), 500):
        chunk = queue_ids[start : start + 500]
        query = select(
            messages.c.queue_id, messages.c.started_at, messages.c.mta, messages.c.id
        ).where(messages.c.queue_id.in_(chunk))
        for qid, started, mta, mid in conn.execute(query):
            candidates[qid].append((started, mta, mid))
    found: dict[str, int] = {}
    for qid, mta, at, key in deliveries:
        ours = [(started, mid) for started, m_mta, mid in candidates.get(qid, ())
                if not (mta and m_mta and m_mta != mta)]
        # Syslog stamps have whole seconds: a line stamped 12:00:05 may be about a message
        # that started at 12:00:05.3.
        before = [c for c in ours if c[0] < at + STAMP_RESOLUTION]
        if before:
            found[key] = max(before)[1]
            continue
        # None started before the line: allow for clocks a little apart.
        soon = [c for c in ours if c[0] <= at + CLOCK_SLACK]
        if soon:
            found[key] = min(soon)[1]
    return found


class _Upsert:
    """INSERT … ON CONFLICT (keys) DO UPDATE for one table and column list, run straight on
    the DBAPI cursor with SQLAlchemy's own bind processors.

    The statement text is the same on SQLite (3.24+) and PostgreSQL. Going through
    ``exec_driver_sql`` skips SQLAlchemy's statement building and per-row parameter
    machinery, the largest item in the milter's profile under load before (py-spy during
    tests/benchmarks/bench_postfix.py).
    """

    def __init__(self, dialect: Dialect, table: Table, columns: Sequence[str],
                 keys: Sequence[str], update: bool = True) -> None:
        self.columns = tuple(columns)
        mark = placeholder(dialect)
        prep = dialect.identifier_preparer
        cols = ", ".join(prep.quote(c) for c in self.columns)
        marks = ", ".join(mark for _ in self.columns)
        updates = ", ".join(
            f"{prep.quote(c)} = excluded.{prep.quote(c)}" for c in self.columns if c not in keys
        )
        action = f"DO UPDATE SET {updates}" if updates and update else "DO NOTHING"
        self._head = f"INSERT INTO {prep.format_table(table)} ({cols}) VALUES "
        self._row = f"({marks})"
        self._tail = f" ON CONFLICT ({', '.join(prep.quote(k) for k in keys)}) {action}"
        self.sql = self._head + self._row + self._tail
        self._by_rows: dict[int, str] = {}
        self._update = update
        self._keys = tuple(self.columns.index(k) for k in keys)
        # Bound parameters per statement: SQLite before 3.32 allows 999.
        limit = 999
        if dialect.name == "sqlite":
            if sqlite3.sqlite_version_info >= (3, 32, 0):
                limit = 32766
        elif dialect.name == "postgresql":
            limit = 32766
        self._rows_per_statement = max(1, limit // len(self.columns))
        # (position, processor) for the columns whose type converts values (datetimes,
        # booleans, JSON); the rest go to the driver as they are.
        self.processors: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(self.columns):
            type_ = table.c[name].type
            proc = type_.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.processors.append((i, proc))

    def run(self, conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
        params = []
        for row in rows:
            values = [row[c] for c in self.columns]
            for i, proc in self.processors:
                values[i] = proc(values[i])
            params.append(tuple(values))
        if not params:
            return
        # One multi-row statement, not executemany: sqlite3 (and psycopg) give the GIL
        # up and take it back around every row of an executemany, and with another thread
        # busy in Python each taking-back waits up to the switch interval: measured, a
        # writer beside one busy thread fell from 17,000 rows/s to 110.
        if len(params) > 1:
            params = self._unique(params)
        per = self._rows_per_statement
        for start in range(0, len(params), per):
            chunk = params[start:start + per]
            conn.exec_driver_sql(self._statement(len(chunk)),
                                 tuple(v for row in chunk for v in row))

    def _statement(self, rows: int) -> str:
        sql = self._by_rows.get(rows)
        if sql is None:
            sql = self._by_rows[rows] = (
                self._head + ", ".join(self._row for _ in range(rows)) + self._tail)
        return sql

    def _unique(self, params: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """One row per key, as executemany would have left the table: the last row with
        DO UPDATE, the first with DO NOTHING (PostgreSQL refuses a statement that
        would touch one row twice)."""
        seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for row in params:
            key = tuple(row[i] for i in self._keys)
            if self._update or key not in seen:
                seen[key] = row
        return list(seen.values()) if len(seen) < len(params) else params


def placeholder(dialect: Dialect) -> str:
    """The DBAPI's positional parameter marker."""
    if dialect.paramstyle == "qmark":
        return "?"
    if dialect.paramstyle in ("format", "pyformat"):
        return "%s"
    raise StoreError(f"unsupported DBAPI paramstyle {dialect.paramstyle}")  # pragma: no cover


_UPSERTS: dict[tuple[type[Dialect], str, tuple[str, ...], tuple[str, ...], bool], _Upsert] = {}


def upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str],
           *, update: bool = True) -> None:
    """Insert ``rows`` (dicts with the same keys) in one executemany; a row whose ``keys``
    exist already is updated, or left alone with ``update=False``."""
    if not rows:
        return
    columns = tuple(rows[0])
    cache_key = (type(conn.dialect), table.name, columns, tuple(keys), update)
    stmt = _UPSERTS.get(cache_key)
    if stmt is None:
        stmt = _UPSERTS[cache_key] = _Upsert(conn.dialect, table, columns, keys, update)
    stmt.run(conn, rows)
