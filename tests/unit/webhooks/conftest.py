"""Webhook test fixtures: the store tests' throwaway databases (SQLite file, PostgreSQL schema)."""

from __future__ import annotations

from tests.unit.store.conftest import db_url, pg_schema

__all__ = ["db_url", "pg_schema"]
