"""Engine construction for SQLite and PostgreSQL, and the mapping of driver errors to store errors."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url

from trackmilter.store.base import EventRejected, StoreConfigError, StoreError, StoreUnavailable

# How long a SQLite writer waits for another process's write lock before giving up (and the
# writer spools). Several daemons (milter, log follower, tracker) may share one file.
DEFAULT_BUSY_TIMEOUT = 5.0
# libpq waits forever for an unreachable host by default; the writer thread would hang.
DEFAULT_CONNECT_TIMEOUT = 10
# A server that vanishes (host down, network cut) sends no reset: the client would wait
# forever while idle (keepalives end that) or, with data unacknowledged mid-statement, for
# the kernel's retransmissions, about 15 minutes (tcp_user_timeout ends that). Either way a
# dead server is noticed within about a minute. Unix sockets ignore both.
_TCP_LIVENESS = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                 "keepalives_count": 3, "tcp_user_timeout": 60_000}

# PostgreSQL SQLSTATE classes that mean "this data can never be stored", as opposed to
# "the server cannot take it right now": 22 data exception, 23 integrity constraint
# violation, 54 program limit exceeded (e.g. an index row too large).
_REJECT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except exc.ArgumentError as e:
        raise StoreConfigError(f"invalid database URL {url!r}: {e}") from e


def describe(url: str | URL) -> str:
    """The URL for messages and logs, password hidden."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except exc.ArgumentError:
        return "<invalid URL>"
    # libpq also takes the password (and other secrets) as query parameters.
    hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_PARAMS}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


# Query parameters that hold secrets (libpq's connection parameters, psycopg's).
_SECRET_PARAMS = frozenset({"password", "sslpassword", "passfile", "sslkey"})


def sqlite_path(url: URL) -> Path | None:
    """The file of a file-backed SQLite URL; ``None`` for other backends and in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def check_sqlite_directory(url: URL) -> None:
    """Raise :class:`StoreConfigError` naming the path if a SQLite file cannot be created or written."""
    path = sqlite_path(url)
    if path is None:
        return
    directory = path.absolute().parent
    if not directory.is_dir():
        raise StoreConfigError(
            f"directory {directory} for SQLite database {path} does not exist; create it first"
        )
    # Even for an existing file: WAL mode creates the -wal and -shm files next to it.
    if not os.access(directory, os.W_OK):
        raise StoreConfigError(f"directory {directory} of SQLite database {path} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise StoreConfigError(f"SQLite database {path} is not writable")


def make_engine(
    url: str | URL,
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
    statement_timeout: float = 0.0,
) -> Engine:
    """An engine with trackmilter's connection settings; does not connect yet.

    ``statement_timeout`` (seconds, 0: none) bounds every PostgreSQL statement; a statement
    cancelled by it is a StoreUnavailable, so the writer spools and retries.
    """
    parsed = parse_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        # A server restarted under us leaves dead pooled connections: test before use.
        kwargs["pool_pre_ping"] = True
        if parsed.get_driver_name() in ("psycopg", "psycopg2"):
            # libpq parameters; any the URL sets itself win.
            kwargs["connect_args"] = {
                k: v for k, v in (("connect_timeout", connect_timeout), *_TCP_LIVENESS.items())
                if k not in parsed.query}
    elif backend != "sqlite":
        raise StoreConfigError(
            f"unsupported database {describe(parsed)}: use sqlite:///PATH or postgresql+psycopg://…"
        )
    try:
        engine = create_engine(parsed, **kwargs)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as e:
        raise StoreConfigError(f"cannot use database {describe(parsed)}: {e}") from e
    if backend == "sqlite":
        _configure_sqlite(engine, busy_timeout)
    elif statement_timeout > 0:
        _set_statement_timeout(engine, statement_timeout)
    return engine


def _set_statement_timeout(engine: Engine, seconds: float) -> None:
    # A SET on each new connection, not libpq's `options`: that would replace PGOPTIONS and
    # a service file's options. Behind PgBouncer in transaction mode, set it on the role
    # instead and [database] statement_timeout = 0: a session SET does not stick there.
    ms = max(1, round(seconds * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET statement_timeout = {ms}")
        finally:
            cursor.close()
        # psycopg opens a transaction for the SET; the pool must get the connection idle.
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (which skips BEGIN before
        # SELECT and DDL) so that transactions mean what they say; see _on_begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            # WAL: readers (status, API) never block the writer and vice versa.
            cursor.execute("PRAGMA journal_mode = WAL")
            # NORMAL is durable across application crashes in WAL mode; only an OS crash or
            # power loss can lose the last transactions, which the spool does not cover anyway.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            # 64 MB of page cache rather than 2: the indexes of a store with millions of
            # hits stay in memory instead of being read back for every batch.
            cursor.execute("PRAGMA cache_size = -65536")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # BEGIN IMMEDIATE for writers: a deferred transaction that reads first and then
        # writes can fail with SQLITE_BUSY without ever waiting on busy_timeout.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def translate(error: Exception, url: str | URL) -> StoreError:
    """Map a SQLAlchemy/driver error to the store's hierarchy; the caller raises it ``from``."""
    where = describe(url)
    if isinstance(error, exc.DBAPIError):
        detail = str(error.orig) if error.orig is not None else str(error)
        sqlstate = getattr(error.orig, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _REJECT_SQLSTATE_CLASSES:
            return EventRejected(f"database {where} refused the data: {detail}")
        if isinstance(error, (exc.IntegrityError, exc.DataError)):
            return EventRejected(f"database {where} refused the data: {detail}")
        if isinstance(error, (exc.OperationalError, exc.InterfaceError)) or error.connection_invalidated:
            return StoreUnavailable(f"database {where} unavailable: {detail}")
        return StoreError(f"database {where} error: {detail}")
    if isinstance(error, (exc.DisconnectionError, exc.TimeoutError)):
        return StoreUnavailable(f"database {where} unavailable: {error}")
    return StoreError(f"database {where} error: {error}")


class Interrupter:
    """Ends, from another thread, whatever an engine's connections are waiting on.

    A database that stops answering without closing anything (its processes stopped, a
    network path that drops packets) leaves a statement waiting forever: PostgreSQL's own
    ``statement_timeout`` runs in the server, which is not running. The client-side deadline
    is this: the writer's watchdog calls :meth:`interrupt`, which shuts down the socket of
    every PostgreSQL connection the engine has open (the blocked ``recv`` returns, psycopg
    raises OperationalError, the pool discards the connection) and interrupts every SQLite
    connection (``sqlite3.Connection.interrupt``, documented as safe from another thread).
    """

    def __init__(self, engine: Engine) -> None:
        self._lock = threading.Lock()
        # sqlite3 connections cannot be weakly referenced: kept by id until the pool closes them.
        self._connections: dict[int, Any] = {}

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            with self._lock:
                self._connections[id(dbapi_connection)] = dbapi_connection

        @event.listens_for(engine, "close")
        def _on_close(dbapi_connection: Any, _record: Any) -> None:
            with self._lock:
                self._connections.pop(id(dbapi_connection), None)

        @event.listens_for(engine, "close_detached")
        def _on_close_detached(dbapi_connection: Any) -> None:
            with self._lock:
                self._connections.pop(id(dbapi_connection), None)

    def interrupt(self) -> int:
        """Interrupt every open connection; returns how many were reached."""
        with self._lock:
            connections = list(self._connections.values())
        reached = 0
        for conn in connections:
            with contextlib.suppress(Exception):
                pgconn = getattr(conn, "pgconn", None)
                if pgconn is not None:  # psycopg 3
                    _shut(pgconn.socket)
                elif hasattr(conn, "interrupt"):  # sqlite3
                    conn.interrupt()
                else:  # psycopg2
                    _shut(conn.fileno())
                reached += 1
        return reached


def _shut(fd: int) -> None:
    """shutdown(2) a connection's socket: it acts on the socket, which a dup shares with the
    driver's own descriptor, so a receive blocked on it returns at once."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.close()
