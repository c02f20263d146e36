"""Schema migrations driven from code (Alembic without alembic.ini) and the schema version check."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, exc

from trackmilter.store.base import SchemaTooOld, StoreConfigError
from trackmilter.store.engine import (
    check_sqlite_directory,
    describe,
    make_engine,
    parse_url,
    sqlite_path,
    translate,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Not Alembic's default "alembic_version": a PostgreSQL database shared with another
# Alembic-managed application would otherwise mix up the two histories.
VERSION_TABLE = "trackmilter_alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations; ``env.py`` uses ``connection``."""
    cfg = Config()
    # set_main_option goes through ConfigParser interpolation: a literal % must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    cfg.attributes["version_table"] = VERSION_TABLE
    return cfg


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The schema revision this code needs."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise StoreConfigError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """Create or upgrade the schema at ``url`` (``trackmilter db upgrade``).

    A SQLite database file is created if missing, but not its directory: a missing or
    read-only directory is almost always a typo or a permissions problem worth reporting.
    """
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
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


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
    try:
        known = _script().get_revision(current)
    except CommandError:
        known = None
    if known is None:
        raise StoreConfigError(
            f"database {where} has schema revision {current!r}, unknown to this trackmilter "
            f"(which needs {head!r}): it was upgraded by a newer version"
        )
    raise SchemaTooOld(
        f"database {where} has schema revision {current!r} but this trackmilter needs "
        f"{head!r}: run `trackmilter db upgrade`"
    )

