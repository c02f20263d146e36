"""Initial schema: messages, recipients, links and the events timeline.

Revision ID: 0001
Revises:
Create Date: 2024-11-26

Written out rather than built from schema.py: a migration must keep creating the schema
of its own revision when schema.py has moved on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSONData = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("tracking_id", sa.String(32), nullable=False),
        sa.Column("queue_id", sa.Text, nullable=False, server_default=""),
        sa.Column("message_id", sa.Text, nullable=False, server_default=""),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("end_reason", sa.String(32), nullable=False),
        sa.Column("sender", sa.Text, nullable=False, server_default=""),
        sa.Column("client_addr", sa.Text, nullable=False, server_default=""),
        sa.Column("client_name", sa.Text, nullable=False, server_default=""),
        sa.Column("auth_user", sa.Text, nullable=False, server_default=""),
        sa.Column("helo", sa.Text, nullable=False, server_default=""),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("rewritten", sa.Boolean, nullable=False),
        sa.Column("skip_reason", sa.String(32), nullable=False, server_default=""),
        sa.Column("pixel", sa.Boolean, nullable=False),
        sa.Column("tracking_header", sa.Boolean, nullable=False),
        sa.Column("link_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("mta", sa.Text, nullable=False, server_default=""),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_tracking_id", "messages", ["tracking_id"], unique=True)
    op.create_index("ix_messages_queue_id", "messages", ["queue_id"])
    op.create_index("ix_messages_message_id", "messages", ["message_id"])
    op.create_index("ix_messages_started_at", "messages", ["started_at"])

    op.create_table(
        "recipients",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("message", ID, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recipients"),
        sa.ForeignKeyConstraint(
            ["message"], ["messages.id"], name="fk_recipients_message_messages", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("message", "address", name="uq_recipients_message_address"),
    )
    op.create_index("ix_recipients_address", "recipients", ["address"])

    op.create_table(
        "links",
        sa.Column("message", ID, nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("message", "idx", name="pk_links"),
        sa.ForeignKeyConstraint(
            ["message"], ["messages.id"], name="fk_links_message_messages", ondelete="CASCADE"
        ),
    )

    op.create_table(
        "events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("message", ID, nullable=True),
        sa.Column("recipient", sa.Text, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.Text, nullable=False, server_default=""),
        sa.Column("code", sa.Text, nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False, server_default=""),
        sa.Column("data", JSONData, nullable=True),
        sa.Column("dedup_key", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.ForeignKeyConstraint(
            ["message"], ["messages.id"], name="fk_events_message_messages", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_events_message", "events", ["message"])
    op.create_index("ix_events_recipient", "events", ["recipient"])
    op.create_index("ix_events_dedup_key", "events", ["dedup_key"], unique=True)


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("links")
    op.drop_table("recipients")
    op.drop_table("messages")
