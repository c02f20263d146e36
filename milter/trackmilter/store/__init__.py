"""Storage: the Store interface, SQLite/PostgreSQL backend, migrations, batched writer and spool."""

from __future__ import annotations

from trackmilter.store.base import (
    EventRejected,
    SchemaTooOld,
    Store,
    StoreConfigError,
    StoreError,
    StoreReader,
    StoreUnavailable,
    StoreUpkeep,
)
from trackmilter.store.migrate import current_revision, head_revision, upgrade
from trackmilter.store.sql import SQLStore
from trackmilter.store.views import EventView, LinkView, MessageView, RecipientView

__all__ = [
    "EventRejected",
    "EventView",
    "LinkView",
    "MessageView",
    "RecipientView",
    "SQLStore",
    "SchemaTooOld",
    "Store",
    "StoreConfigError",
    "StoreError",
    "StoreReader",
    "StoreUnavailable",
    "StoreUpkeep",
    "current_revision",
    "head_revision",
    "upgrade",
]
