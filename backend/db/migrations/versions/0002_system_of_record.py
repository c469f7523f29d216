"""The system of record: revisions and archive progress per room, each
message's timestamp and revision, the ``updates`` log, 64-bit seqs, and the
body as JSON text. ``messages.ts`` is filled from the body's JSON ``ts``.

SQLite cannot alter columns, so there each table is rebuilt (batch mode),
keeping its rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ZERO = sa.text("0")


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("rooms") as batch:
        # SQLite let the old TEXT PRIMARY KEY be NULL
        batch.alter_column("name", existing_type=sa.Text, nullable=False)
        batch.alter_column("last_seq", type_=sa.BigInteger, existing_nullable=False, existing_server_default=_ZERO)
        batch.add_column(sa.Column("last_rev", sa.BigInteger, nullable=False, server_default=_ZERO))
        batch.add_column(sa.Column("archived_seq", sa.BigInteger, nullable=False, server_default=_ZERO))

    with op.batch_alter_table("messages", table_kwargs={"sqlite_with_rowid": False}) as batch:
        batch.alter_column("seq", type_=sa.BigInteger, existing_nullable=False)
        batch.alter_column(
            "body",
            type_=sa.Text,
            existing_type=sa.LargeBinary,
            existing_nullable=False,
            postgresql_using="convert_from(body, 'UTF8')",
        )
        batch.add_column(sa.Column("ts", sa.BigInteger, nullable=False, server_default=_ZERO))
        batch.add_column(sa.Column("rev", sa.BigInteger, nullable=False, server_default=_ZERO))

    if sqlite:
        op.execute(
            "UPDATE messages SET ts = CAST(json_extract(CAST(body AS TEXT), '$.ts') AS INTEGER) "
            "WHERE json_valid(CAST(body AS TEXT)) AND json_type(CAST(body AS TEXT), '$.ts') IN ('integer', 'real')"
        )
    else:
        op.execute(
            "UPDATE messages SET ts = (body::jsonb ->> 'ts')::bigint WHERE jsonb_typeof(body::jsonb -> 'ts') = 'number'"
        )
    # ts has no default: every writer knows the message's time
    with op.batch_alter_table("messages", table_kwargs={"sqlite_with_rowid": False}) as batch:
        batch.alter_column("ts", server_default=None, existing_type=sa.BigInteger, existing_nullable=False)

    op.create_table(
        "updates",
        sa.Column("room", sa.Text, nullable=False),
        sa.Column("rev", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("room", "rev", name="updates_pkey"),
        sqlite_with_rowid=False,
    )
    op.create_index("updates_room_seq", "updates", ["room", "seq"])


def downgrade() -> None:
    op.drop_index("updates_room_seq", table_name="updates")
    op.drop_table("updates")
    with op.batch_alter_table("messages", table_kwargs={"sqlite_with_rowid": False}) as batch:
        batch.drop_column("rev")
        batch.drop_column("ts")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("archived_seq")
        batch.drop_column("last_rev")
