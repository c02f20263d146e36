"""ix_events_untied_queue_id: untied events by the queue id in their data, so that a message
written after its deliveries (a milter's journal or spool replayed late) finds them with an
index lookup (store/backfill.py).

Partial (only rows with no message: small, and an insert of a tied row never touches it) and
on an expression, which differs by backend: JSONB's ->> on PostgreSQL, json_extract on SQLite.
Queries must spell the expression and the predicate the same way (backfill.QUEUE_ID_SQL).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

INDEX = "ix_events_untied_queue_id"
# Written out, not imported from backfill: a migration keeps its own revision's DDL.
EXPRESSION = {
    "postgresql": "(data ->> 'queue_id')",
    "sqlite": "json_extract(data, '$.queue_id')",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(f"CREATE INDEX {INDEX} ON events ({EXPRESSION[dialect]}) WHERE message IS NULL")


def downgrade() -> None:
    op.execute(f"DROP INDEX {INDEX}")
