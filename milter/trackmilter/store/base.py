"""The store's interface (a Protocol every backend and test fake implements) and its errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection

from trackmilter.model import Event
from trackmilter.store.views import MessageView


class StoreError(Exception):
    """Base of every error the store layer raises."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or cannot take writes right now; retrying later may work.

    The background writer spools events on this and retries.
    """


class SchemaTooOld(StoreError):
    """The database has no schema, or an older one than this code: run ``trackmilter db upgrade``."""


class StoreConfigError(StoreError):
    """The store is configured wrongly (bad URL, missing driver, unusable SQLite path)."""


class EventRejected(StoreError):
    """The database refused the data itself (constraint, value out of range).

    Retrying the same events cannot help, so the writer moves them aside instead of
    retrying them forever; any other error is treated as "try again later".
    """


class Store(Protocol):
    """Where events go (the writer's side): every backend and test fake implements it."""

    def write(self, events: Sequence[Event]) -> None:
        """Store ``events`` in one transaction; writing the same events again changes nothing."""
        ...

    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]:
        """Messages matching a tracking id, Message-ID, queue id or recipient, newest first."""
        ...

    def ping(self) -> None:
        """Return if the store is usable; raise :class:`StoreError` (usually unavailable) if not."""
        ...

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


class StoreReader(Protocol):
    """What the views read (`status`, the JSON API, `report`)."""

    def lookup(self, ident: str, *, limit: int = 100) -> list[MessageView]:
        """Messages matching a tracking id, Message-ID, queue id or recipient, newest first."""
        ...

    def count_messages(self, since: datetime, sender: str = "") -> int:
        """How many messages `scan` goes through (for a progress bar)."""
        ...

    def scan(self, since: datetime, sender: str = "", chunk: int = 200, *,
             with_hits: bool = True) -> Iterator[list[MessageView]]:
        """Every message started at or after `since` (from `sender`), `chunk` at a time;
        without `with_hits`, the views carry no hits."""
        ...

    def hit_counts(self, tracking_ids: Sequence[str]) -> dict[str, dict[tuple[str, str], int]]:
        """Per tracking id, hits by (target, verdict), counted in the database."""
        ...

    def log_progress(self, mtas: Sequence[str]) -> dict[str, datetime | None]:
        """Per MTA, the latest delivery-log line stored from it (None: none ever)."""
        ...


class StoreUpkeep(Protocol):
    """What the tracker's revisions and `trackmilter purge` ask of the store."""

    def revise_hits(self, tracking_ids: Sequence[str], since: datetime | None = None) -> int:
        """Judge these messages' hits again with everything stored; how many changed."""
        ...

    def purge(self, before: datetime) -> dict[str, int]:
        """Delete what is older than `before`; how many rows of each kind went."""
        ...


class WriteHook(Protocol):
    """Something more to do with the events a store writes, in the same transaction.

    A SQL store calls each of its hooks after the events are stored and before the commit,
    with the write transaction's connection: what a hook writes commits or rolls back with
    the events (the webhook outbox is one, see trackmilter.webhooks.outbox.OutboxHook). It
    is called with hits whose verdict a revision changed too. Raising aborts the write.
    """

    def written(self, conn: Connection, events: Sequence[Event], now: datetime) -> None:
        ...
