"""ix_events_source_kind_at: the latest delivery-log line stored from each MTA (`trackmilter
status` shows it, so "nothing yet" can be told from "the log follower is not running") with
an index lookup instead of a scan of every event.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

INDEX = "ix_events_source_kind_at"


def upgrade() -> None:
    op.create_index(INDEX, "events", ["source", "kind", "at"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="events")
