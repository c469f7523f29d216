"""Full-text search over message text, in the engine's own kind of index.

SQLite (the embedded store): an FTS5 table ``messages_fts`` of each message's text
(and its room as one token, the name's UTF-8 in hex, to filter by), kept by the store's writer in the same transaction
as the message; its rowid is ``ts * 2**20 + n`` (n numbers the messages of one
millisecond), so newest first is rowid order and a message's row is found from its
``ts``. PostgreSQL (the fleet's archive): a generated ``tsvector`` column of the
body's ``text`` with a GIN index, so the archive's replacing a body on an edit or a
delete re-indexes it, and an index on ``(ts, room, seq)`` for newest first. Both
tokenize alike (``backend.search``). Existing rows are indexed here.

None of it is in ``backend.db.schema`` (SQLAlchemy has no FTS5 tables, and the
index is per engine): ``schema.include_object`` leaves it out of comparisons.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FTS_ROWID_SHIFT = 1 << 20


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE messages_fts USING fts5("
            "text, room, seq UNINDEXED, tokenize = 'unicode61 remove_diacritics 0')"
        )
        op.execute(
            "INSERT INTO messages_fts (rowid, text, room, seq)"
            f" SELECT ts * {FTS_ROWID_SHIFT} + ROW_NUMBER() OVER (PARTITION BY ts ORDER BY room, seq) - 1,"
            " json_extract(body, '$.text'), lower(hex(room)), seq FROM messages"
            " WHERE json_valid(body) AND json_type(body, '$.text') = 'text' AND json_extract(body, '$.text') != ''"
        )
        return
    op.execute(
        "ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS"
        " (to_tsvector('simple'::regconfig, coalesce(body::jsonb ->> 'text', ''))) STORED"
    )
    op.execute("CREATE INDEX messages_search ON messages USING gin (search)")
    op.execute("CREATE INDEX messages_recent ON messages (ts, room, seq)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE messages_fts")
        return
    op.execute("DROP INDEX messages_recent")
    op.execute("DROP INDEX messages_search")
    op.execute("ALTER TABLE messages DROP COLUMN search")
