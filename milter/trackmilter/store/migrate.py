"""Schema migrations driven from code (Alembic without alembic.ini) and the schema version check.

Only `upgrade` (and the tests) need Alembic itself, which takes 80 ms to import: every
daemon and `trackmilter status` check the schema on their first connection, so the check
reads the version table with one query and knows the revisions from the migration files'
names (``NNNN_what.py`` holds revision ``NNNN``; a unit test holds the two to each other).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, exc, inspect, text

from trackmilter.store.base import SchemaTooOld, StoreConfigError
from trackmilter.store.engine import (
    check_sqlite_directory,
    describe,
    make_engine,
    parse_url,
    sqlite_path,
    translate,
)

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Not Alembic's default "alembic_version": a PostgreSQL database shared with another
# Alembic-managed application would otherwise mix up the two histories.
VERSION_TABLE = "trackmilter_alembic_version"


_REVISION_FILE = re.compile(r"^(\d{4})_\w+\.py$")


@lru_cache(maxsize=1)
def revisions() -> tuple[str, ...]:
    """Every schema revision this code knows, oldest first: the migration files' prefixes."""
    found = sorted(m.group(1) for p in (MIGRATIONS_DIR / "versions").iterdir()
                   if (m := _REVISION_FILE.match(p.name)))
    if not found:  # pragma: no cover - the package always ships revisions
        raise StoreConfigError(f"no migrations found in {MIGRATIONS_DIR}")
    return tuple(found)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations; ``env.py`` uses ``connection``."""
    # Here, not above: only `db upgrade` and the tests need Alembic (start-up time).
    from alembic.config import Config

    cfg = Config()
    # set_main_option goes through ConfigParser interpolation: a literal % must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


def head_revision() -> str:
    """The schema revision this code needs."""
    return revisions()[-1]


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema at ``url`` (``trackmilter db upgrade``).

    A SQLite database file is created if missing, but not its directory: a missing or
    read-only directory is almost always a typo or a permissions problem worth reporting.
    """
    # Here, not above: only this command needs Alembic (start-up time, see the docstring).
    from alembic import command
    from alembic.util import CommandError

    parsed = parse_url(url)
    check_sqlite_directory(parsed)
    engine = make_engine(parsed)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    except exc.SQLAlchemyError as e:
        raise translate(e, parsed) from e
    except CommandError as e:
        raise StoreConfigError(f"cannot upgrade {describe(parsed)} to {revision}: {e}") from e
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The schema revision of the database at ``url``; ``None`` if it has no schema (or no file)."""
    parsed = parse_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.exists():
        return None  # connecting would create an empty file as a side effect
    engine = make_engine(parsed)
    try:
        with engine.connect() as conn:
            return _current(conn)
    except exc.SQLAlchemyError as e:
        raise translate(e, parsed) from e
    finally:
        engine.dispose()


def _current(conn: Connection) -> str | None:
    """The revision in the version table, as Alembic keeps it (one row; no table: None)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:  # Alembic keeps one row per head; ours is a single line of history
        raise StoreConfigError(f"schema version table {VERSION_TABLE} has several heads: "
                               f"{', '.join(sorted(rows))}")
    return rows[0] if rows else None


def check_schema(conn: Connection, where: str) -> None:
    """Raise unless the database behind ``conn`` is at exactly the revision this code needs."""
    current = _current(conn)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaTooOld(
            f"database {where} has no trackmilter schema: run `trackmilter db upgrade`"
        )
    if current not in revisions():
        raise StoreConfigError(
            f"database {where} has schema revision {current!r}, unknown to this trackmilter "
            f"(which needs {head!r}): it was upgraded by a newer version"
        )
    raise SchemaTooOld(
        f"database {where} has schema revision {current!r} but this trackmilter needs "
        f"{head!r}: run `trackmilter db upgrade`"
    )

