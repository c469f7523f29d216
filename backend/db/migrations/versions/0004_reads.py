"""Read state: how far each user has read in each room, kept for good so
unread counts survive a Redis data loss and are the same on every device.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reads",
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("room", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "room", name="reads_pkey"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("reads")
