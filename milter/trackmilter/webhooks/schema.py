"""The webhook outbox table: defined with the rest of the schema in trackmilter.store.schema."""

from __future__ import annotations

from trackmilter.store.schema import webhook_outbox

__all__ = ["webhook_outbox"]
