"""Store test fixtures: a throwaway database per test (SQLite file, or a PostgreSQL schema)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine
from tests.unit.store.store_helpers import BACKENDS, PG_URL, SocketProxy, pg_target, with_schema

from trackmilter.metrics import Metrics
from trackmilter.store import SQLStore, upgrade


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema; the URL's search_path points there, so tests can run in parallel."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield schema
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[SQLStore]:
    """A store on a freshly upgraded throwaway database."""
    upgrade(db_url)
    s = SQLStore(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema) on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/trackmilter.db"
    schema: str = request.getfixturevalue("pg_schema")
    return with_schema(PG_URL, schema)


@pytest.fixture
def pg_proxy() -> Iterator[SocketProxy]:
    proxy = SocketProxy(pg_target(PG_URL))
    try:
        yield proxy
    finally:
        proxy.close()

