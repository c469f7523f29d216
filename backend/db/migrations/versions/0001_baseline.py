"""Baseline: the schema the embedded SQLite store created before there were
migrations. On such a file it finds the tables and does nothing, so the next
revision upgrades it in place; on an empty database it creates them.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "rooms" not in existing:
        op.create_table(
            "rooms",
            sa.Column("name", sa.Text, primary_key=True),
            sa.Column("epoch", sa.Text, nullable=False),
            sa.Column("last_seq", sa.Integer, nullable=False, server_default=sa.text("0")),
        )
    if "messages" not in existing:
        op.create_table(
            "messages",
            sa.Column("room", sa.Text, nullable=False),
            sa.Column("seq", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("user_id", sa.Text, nullable=False),
            sa.Column("client_id", sa.Text, nullable=False),
            sa.Column("body", sa.LargeBinary, nullable=False),
            sa.PrimaryKeyConstraint("room", "seq", name="messages_pkey"),
            sqlite_with_rowid=False,
        )
        op.create_index("messages_dedupe", "messages", ["room", "user_id", "client_id"], unique=True)


def downgrade() -> None:
    op.drop_index("messages_dedupe", table_name="messages")
    op.drop_table("messages")
    op.drop_table("rooms")
