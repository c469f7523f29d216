"""The tables of the system of record, identical for PostgreSQL and SQLite.

``messages.body`` is the message's current state as JSON (what clients get);
``updates`` only says *that* message ``seq`` changed at ``rev``, so a delete
that replaces the body removes the text from the database for good.
``accounts`` holds who may sign in (fleet mode; embedded files had the same
table before it was here), so losing Redis costs sessions, never an account.
Alembic's migrations must produce exactly this (a test compares them), except
the search indexes (migrations 0006, 0007), which ``include_object`` leaves out.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, PrimaryKeyConstraint, Table, Text, text

metadata = MetaData()

rooms = Table(
    "rooms",
    metadata,
    Column("name", Text, primary_key=True),
    Column("epoch", Text, nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("last_rev", BigInteger, nullable=False, server_default=text("0")),
    Column("archived_seq", BigInteger, nullable=False, server_default=text("0")),
)

messages = Table(
    "messages",
    metadata,
    Column("room", Text, nullable=False),
    Column("seq", BigInteger, nullable=False, autoincrement=False),
    Column("user_id", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("rev", BigInteger, nullable=False, server_default=text("0")),
    Column("body", Text, nullable=False),
    PrimaryKeyConstraint("room", "seq", name="messages_pkey"),
    Index("messages_dedupe", "room", "user_id", "client_id", unique=True),
    sqlite_with_rowid=False,
)

updates = Table(
    "updates",
    metadata,
    Column("room", Text, nullable=False),
    Column("rev", BigInteger, nullable=False, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("room", "rev", name="updates_pkey"),
    Index("updates_room_seq", "room", "seq"),
    sqlite_with_rowid=False,
)

MILLIS = BigInteger().with_variant(Integer(), "sqlite")
"""Milliseconds since the epoch: BIGINT in PostgreSQL (they overflow INTEGER);
SQLite's INTEGER is 64-bit already and is what embedded files were made with."""

accounts = Table(
    "accounts",
    metadata,
    Column("id", Text, primary_key=True),
    # stored normalized (``normalize_username`` casefolds it), so unique is case-insensitive
    Column("username", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", MILLIS, nullable=False),
)

reads = Table(
    "reads",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("room", Text, nullable=False),
    # the last message seq the user has read in the room; it only moves forward
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "room", name="reads_pkey"),
    sqlite_with_rowid=False,
)

room_access = Table(
    "room_access",
    metadata,
    # a room listed here is private (invited members only); a room not listed is public
    Column("room", Text, primary_key=True),
    Column("dm", Boolean, nullable=False, server_default=text("false")),
    Column("owner", Text, nullable=True),
)

room_members = Table(
    "room_members",
    metadata,
    Column("room", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    PrimaryKeyConstraint("room", "user_id", name="room_members_pkey"),
    Index("room_members_user", "user_id"),
    sqlite_with_rowid=False,
)

SEARCH_TABLE = "messages_fts"
"""SQLite's FTS5 table of message text (and its shadow tables ``messages_fts_*``)."""
SEARCH_OBJECTS = frozenset({"search", "messages_search", "messages_room_search", "messages_recent"})
"""PostgreSQL's ``messages.search`` tsvector column and its indexes."""


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's filter: everything but the search indexes, which SQLAlchemy cannot describe."""
    if type_ == "table" and name is not None and name.startswith(SEARCH_TABLE):
        return False
    return not (reflected and compare_to is None and name in SEARCH_OBJECTS)
