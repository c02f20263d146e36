"""messages.links: a message's rewritten links as one JSON value instead of a row per link
in table `links` (25 links were 25 rows for the milter's writer to insert; now none).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

JSONData = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_CHUNK = 5000  # messages per UPDATE batch while moving existing links


def _messages() -> sa.TableClause:
    return sa.table("messages", sa.column("id", sa.BigInteger), sa.column("links", JSONData))


def _links() -> sa.TableClause:
    return sa.table("links", sa.column("message", sa.BigInteger), sa.column("idx", sa.Integer),
                    sa.column("url", sa.Text))


def upgrade() -> None:
    op.add_column("messages", sa.Column("links", JSONData, nullable=True))
    conn = op.get_bind()
    links, messages = _links(), _messages()
    moved: dict[int, list[list[Any]]] = defaultdict(list)
    rows = conn.execute(sa.select(links.c.message, links.c.idx, links.c.url)
                        .order_by(links.c.message, links.c.idx))
    update = (sa.update(messages).where(messages.c.id == sa.bindparam("mid"))
              .values(links=sa.bindparam("value", type_=JSONData)))
    for message, idx, url in rows:
        if message not in moved and len(moved) >= _CHUNK:
            conn.execute(update, [{"mid": m, "value": v} for m, v in moved.items()])
            moved.clear()
        moved[message].append([idx, url])
    if moved:
        conn.execute(update, [{"mid": m, "value": v} for m, v in moved.items()])
    op.drop_table("links")


def downgrade() -> None:
    conn = op.get_bind()
    messages, links = _messages(), _links()
    rows = [{"message": mid, "idx": int(i), "url": str(u)}
            for mid, value in conn.execute(sa.select(messages.c.id, messages.c.links)
                                           .where(messages.c.links.is_not(None)))
            for i, u in value]
    # The column first: SQLite's batch mode copies and drops `messages`, which would
    # cascade into a `links` table that already pointed at it.
    with op.batch_alter_table("messages") as b:
        b.drop_column("links")
    op.create_table(
        "links",
        sa.Column("message", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("message", "idx", name="pk_links"),
        sa.ForeignKeyConstraint(
            ["message"], ["messages.id"], name="fk_links_message_messages", ondelete="CASCADE"
        ),
    )
    for start in range(0, len(rows), _CHUNK):
        conn.execute(sa.insert(links), rows[start : start + _CHUNK])
