"""hits and hit_verdicts: the tracker's clicks and opens, each with its verdict history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

TS = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONData = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "hits",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("hit_id", sa.String(64), nullable=False),
        sa.Column("tracking_id", sa.String(32), nullable=False),
        sa.Column("target", sa.String(8), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False, server_default="0"),
        sa.Column("url", sa.Text, nullable=False, server_default=""),
        sa.Column("at", TS, nullable=False),
        sa.Column("client", sa.Text, nullable=False, server_default=""),
        sa.Column("network", sa.Text, nullable=False, server_default=""),
        sa.Column("method", sa.String(16), nullable=False, server_default="GET"),
        sa.Column("user_agent", sa.Text, nullable=False, server_default=""),
        sa.Column("headers", JSONData, nullable=True),
        sa.Column("honeypot", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("tracker", sa.Text, nullable=False, server_default=""),
        sa.Column("request_verdict", sa.String(16), nullable=False),
        sa.Column("request_reasons", JSONData, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reasons", JSONData, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_hits"),
    )
    op.create_index("ix_hits_hit_id", "hits", ["hit_id"], unique=True)
    op.create_index("ix_hits_tracking_id_at", "hits", ["tracking_id", "at"])
    op.create_index("ix_hits_at", "hits", ["at"])
    op.create_table(
        "hit_verdicts",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("hit", ID, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("reasons", JSONData, nullable=True),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_hit_verdicts"),
        sa.ForeignKeyConstraint(["hit"], ["hits.id"], name="fk_hit_verdicts_hit_hits",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_hit_verdicts_hit", "hit_verdicts", ["hit"])


def downgrade() -> None:
    op.drop_table("hit_verdicts")
    op.drop_table("hits")
