"""Alembic environment: runs trackmilter's migrations on the connection handed over by migrate.py."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from trackmilter.store.engine import make_engine
from trackmilter.store.migrate import VERSION_TABLE
from trackmilter.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Developer path: the `alembic` command (e.g. `revision --autogenerate`) with
    # store/alembic.ini; the URL comes from the environment, never from a checked-in file.
    url = os.environ.get("TRACKMILTER_DB_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set TRACKMILTER_DB_URL to the database to migrate")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, version_table=VERSION_TABLE,
                          literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


_main()
