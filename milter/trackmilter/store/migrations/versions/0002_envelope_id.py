"""messages.envelope_id: the client's ENVID (RFC 3461), so that a DSN's
Original-Envelope-Id ties it to the message.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A constant default: SQLite can add a NOT NULL column without rebuilding the table.
    op.add_column(
        "messages", sa.Column("envelope_id", sa.Text, nullable=False, server_default="")
    )
    op.create_index("ix_messages_envelope_id", "messages", ["envelope_id"])


def downgrade() -> None:
    op.drop_index("ix_messages_envelope_id", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("envelope_id")
