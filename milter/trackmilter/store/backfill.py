"""Deliveries stored before their message: tied to it when the message is written.

A delivery event is tied to its message when it is written, by queue id and MTA
(`rows.messages_for_deliveries`). The milter's record of a message may be written after
`trackmilter maillog` stored that message's deliveries: replayed from the milter's journal
at its next start after a crash or a stalled database connection, or from its spool after
its database was down while the follower's was up. Such deliveries were stored untied.

Writing a message looks up the untied delivery rows under its queue id (index
ix_events_untied_queue_id, revision 0007: one lookup per batch, only untied rows are in
it), asks `messages_for_deliveries` which message each would be tied to if it were
written now (the same rules: the MTA, the latest message started before the line, or the
first within CLOCK_SLACK after it, for a reused short queue id), and ties the ones that
go to a message of this batch. A short queue id's earlier message, if stored, had taken
the late message's lines as the latest one started before them: those tied by that queue
id are looked at too (by message, only when a stored message has the queue id) and move.
UPDATEs of rows still as they were read: a replay changes nothing.

On PostgreSQL a message batch and a delivery batch written at the same moment would not
see each other's rows (READ COMMITTED) and each would leave the delivery untied: `serialize`
makes writers of deliveries wait for writers of messages and the other way round (writers of
messages only share the lock, so several milters still write side by side). SQLite writers
are serialized already (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Dialect, update

from trackmilter.store.rows import CLOCK_SLACK, DELIVERY_KIND, messages_for_deliveries, placeholder
from trackmilter.store.schema import UntiedQueueId, events

__all__ = ["apply", "serialize"]

# One transaction-level advisory lock, by a key no other application is likely to use.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"trackmilter.store.ties").digest()[:8], "big",
                          signed=True)
# Queue ids (or messages) per statement, which may name each twice (old SQLite builds: 999
# parameters at most).
_CHUNK = 400
INDEX = "ix_events_untied_queue_id"  # revision 0007


def serialize(conn: Connection, *, ties: bool, messages: bool) -> None:
    """Take the write lock that ties depend on, first thing in the transaction (before any
    row lock, so it cannot deadlock): exclusive for a batch that ties events to stored
    messages (`ties`), shared for one that only writes messages."""
    if conn.dialect.name != "postgresql" or not (ties or messages):
        return
    function = "pg_advisory_xact_lock" if ties else "pg_advisory_xact_lock_shared"
    conn.exec_driver_sql(f"SELECT {function}({LOCK_KEY})")


def apply(conn: Connection, written: Sequence[tuple[int, str, datetime]]) -> list[int]:
    """Tie to these just-written messages, given as (message id, queue id, started at), the
    stored deliveries a delivery line written now would be tied to; return the messages
    whose deliveries changed."""
    # sql.py imports this module: its helpers are looked up when first needed.
    mine = {mid for mid, qid, _ in written if qid}
    # A line is tied to a message only if it was logged at most CLOCK_SLACK before the
    # message started: older lines under a reused queue id are another message's.
    since: dict[str, datetime] = {}
    for _, qid, started in written:
        if qid:
            bound = started - CLOCK_SLACK
            since[qid] = min(bound, since.get(qid, bound))
    if not since:
        return []
    lookup = _Lookup.of(conn.dialect)
    rows: list[_Row] = []
    others: dict[int, str] = {}  # stored messages with these queue ids -> queue id
    qids = sorted(since)
    for start in range(0, len(qids), _CHUNK):
        chunk = qids[start:start + _CHUNK]
        untied, stored = lookup.untied(conn, chunk, DELIVERY_KIND, min(since[q] for q in chunk))
        rows += untied
        others.update((mid, qid) for mid, qid in stored if mid not in mine)
    # A short queue id's earlier message, stored first, took the lines a late message
    # logged after it started (the latest message that had started then): those tied by
    # that queue id (the re-injected copy's lines store/relink.py tied name another).
    ids = sorted(others)
    for start in range(0, len(ids), _CHUNK):
        some = ids[start:start + _CHUNK]
        rows += [r for r in lookup.tied(conn, some, DELIVERY_KIND,
                                        min(since[others[m]] for m in some))
                 if r[5] is not None and r[4] == others[r[5]]]
    # (queue id, mta, at, row id) as messages_for_deliveries takes them; row id -> message.
    found: list[tuple[str, str, datetime, str]] = []
    current: dict[str, int | None] = {}
    for rid, key, source, at, qid, mid in rows:
        if qid in since and at >= since[qid]:
            found.append((qid, _mta(key or "", source, qid), at, str(rid)))
            current[str(rid)] = mid
    if not found:
        return []
    moves: dict[tuple[int, int | None], list[int]] = defaultdict(list)
    for row, mid in messages_for_deliveries(conn, found).items():
        if mid in mine and mid != current[row]:
            moves[(mid, current[row])].append(int(row))
    changed: set[int] = set()
    for (mid, old), moved in moves.items():
        for start in range(0, len(moved), _CHUNK):
            # Only rows still as they were read: a replay finds nothing to do.
            unchanged = (events.c.message.is_(None) if old is None
                         else events.c.message == old)
            done = conn.execute(update(events)
                                .where(events.c.id.in_(moved[start:start + _CHUNK]), unchanged)
                                .values(message=mid))
            if done.rowcount:
                changed.add(mid)
                if old is not None:
                    changed.add(old)  # its hits are judged again without these lines
    return sorted(changed)


# (row id, dedup key, source, at, queue id in its data, message)
_Row = tuple[int, "str | None", str, datetime, str, "int | None"]


class _Lookup:
    """The statements, straight on the DBAPI cursor: the milter's writer runs one for every
    batch, and SQLAlchemy's statement machinery would cost more than the lookup.

    `untied`: in one statement, the untied deliveries under some queue ids (`message IS
    NULL` and the queue id expression spelled exactly as the partial index has them, see
    schema.UntiedQueueId; SQLite is told the index: without ANALYZE statistics its planner
    prefers ix_events_message for `message IS NULL`, which is every untied row) and the
    stored messages with those queue ids (ix_messages_queue_id). `tied`: the deliveries of
    some messages (ix_events_message), needed only when a queue id was reused.
    """

    _cache: dict[str, _Lookup] = {}

    def __init__(self, dialect: Dialect) -> None:
        self._mark = placeholder(dialect)
        self._qid = UntiedQueueId().compile(dialect=dialect)
        self._hint = f" INDEXED BY {INDEX}" if dialect.name == "sqlite" else ""
        at = events.c.at.type.dialect_impl(dialect)
        self._bind = at.bind_processor(dialect)
        self._result = at.result_processor(dialect, None)
        self._sql: dict[tuple[str, int], str] = {}

    @classmethod
    def of(cls, dialect: Dialect) -> _Lookup:
        lookup = cls._cache.get(dialect.name)
        if lookup is None:
            lookup = cls._cache[dialect.name] = cls(dialect)
        return lookup

    def sql(self, which: str, n: int) -> str:
        sql = self._sql.get((which, n))
        if sql is None:
            m, marks = self._mark, ", ".join(self._mark for _ in range(n))
            if which == "untied":
                # A message's row has no event id: its id is in the last column.
                sql = (f"SELECT id, dedup_key, source, at, {self._qid}, NULL"
                       f" FROM events{self._hint} WHERE message IS NULL"
                       f" AND {self._qid} IN ({marks}) AND kind = {m} AND at >= {m}"
                       " UNION ALL SELECT NULL, NULL, NULL, NULL, queue_id, id"
                       f" FROM messages WHERE queue_id IN ({marks})")
            else:
                sql = (f"SELECT id, dedup_key, source, at, {self._qid}, message FROM events"
                       f" WHERE message IN ({marks}) AND kind = {m} AND at >= {m}")
            self._sql[(which, n)] = sql
        return sql

    def untied(self, conn: Connection, qids: list[str], kind: str, since: datetime
               ) -> tuple[list[_Row], list[tuple[int, str]]]:
        """The untied deliveries under these queue ids logged at or after `since`, and the
        stored messages with these queue ids as (id, queue id)."""
        params = (*qids, kind, self._since(since), *qids)
        rows, stored = [], []
        for row in conn.exec_driver_sql(self.sql("untied", len(qids)), params):
            if row[0] is None:
                stored.append((int(row[5]), row[4]))
            else:
                rows.append(self._row(row))
        return rows, stored

    def tied(self, conn: Connection, mids: list[int], kind: str, since: datetime
             ) -> list[_Row]:
        """The deliveries of these messages logged at or after `since`."""
        params = (*mids, kind, self._since(since))
        return [self._row(r) for r in conn.exec_driver_sql(self.sql("tied", len(mids)), params)]

    def _since(self, since: datetime) -> Any:
        return self._bind(since) if self._bind is not None else since

    def _row(self, row: Any) -> _Row:
        rid, key, source, at, qid, mid = row
        when = cast(datetime, self._result(at) if self._result is not None else at)
        return int(rid), key, source, when, qid, None if mid is None else int(mid)


def _mta(key: str, source: str, qid: str) -> str:
    """The MTA a stored delivery row was logged by, as `DeliveryObserved.mta` said it.

    `source` is that name, or "maillog" when it was empty; the dedup key
    (``delivery:<mta>:<queue id>:…``, sql._add_delivery) tells which, unless it was too
    long and stored as a digest."""
    if key.startswith(f"delivery:{source}:{qid}:"):
        return source
    if key.startswith(f"delivery::{qid}:"):
        return ""
    return "" if source == "maillog" else source
