"""Accounts in the system of record, so a fleet whose Redis loses its data
keeps every account (only sessions go: users sign in again).

An embedded file already has this table (``SqliteAccounts`` made it with the
same columns): there it is kept, rows and all, only rebuilt (batch mode) where
SQLite let its TEXT PRIMARY KEY be NULL, as 0002 did for ``rooms``; elsewhere
it is made.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "accounts" in inspector.get_table_names():
        if any(c["name"] == "id" and c["nullable"] for c in inspector.get_columns("accounts")):
            with op.batch_alter_table("accounts") as batch:
                batch.alter_column("id", existing_type=sa.Text, nullable=False)
        return
    op.create_table(
        "accounts",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("accounts")
