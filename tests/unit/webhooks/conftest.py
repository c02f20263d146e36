"""Webhook test fixtures: the store tests' throwaway databases (SQLite file, PostgreSQL
schema), upgraded, as an engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from tests.unit.store.conftest import db_url, pg_schema

from trackmilter.store import upgrade
from trackmilter.store.engine import make_engine

__all__ = ["db_url", "engine", "pg_schema"]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    upgrade(db_url)
    e = make_engine(db_url)
    try:
        yield e
    finally:
        e.dispose()
