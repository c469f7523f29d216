"""Search within one room without walking every match of a common word.

PostgreSQL: a GIN index over ``(room, search)`` (``btree_gin`` gives text a GIN
operator class) replaces the GIN over ``search`` alone. A search restricted to
one room then intersects that room's entry with the words' entries inside the
index, instead of building a bitmap of every message holding the word in any
room (three quarters of 1,000,000 for the commonest) and dropping the other
rooms' rows one heap row at a time; a search over many rooms uses its
``search`` column as the old index did. SQLite is unchanged: its FTS5 table
already holds the room as a token (migration 0006).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute("CREATE INDEX messages_room_search ON messages USING gin (room, search)")
    op.execute("DROP INDEX messages_search")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    op.execute("CREATE INDEX messages_search ON messages USING gin (search)")
    op.execute("DROP INDEX messages_room_search")
