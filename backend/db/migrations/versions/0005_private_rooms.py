"""Private rooms and direct messages: which rooms are private (``room_access``;
a room not listed is public) and who may read them (``room_members``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "room_access",
        sa.Column("room", sa.Text, primary_key=True),
        sa.Column("dm", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("owner", sa.Text, nullable=True),
    )
    op.create_table(
        "room_members",
        sa.Column("room", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("room", "user_id", name="room_members_pkey"),
        sqlite_with_rowid=False,
    )
    op.create_index("room_members_user", "room_members", ["user_id"])


def downgrade() -> None:
    op.drop_index("room_members_user", "room_members")
    op.drop_table("room_members")
    op.drop_table("room_access")
