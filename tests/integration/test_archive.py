"""The system of record against a real PostgreSQL (tests' own server) and a
SQLite file: migrations, and ``Archive`` writes and reads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from backend.accounts import SqliteAccounts, UsernameTaken
from backend.db import archive as archive_module
from backend.db.archive import DEFAULT_EPOCH, Archive
from backend.db.migrate import upgrade
from backend.db.schema import accounts, include_object, messages, metadata, rooms, updates
from backend.db.urls import driver_url
from tests.dbhelpers import changed, message, sent
from tests.support import ROOT, PostgresServer

OLD_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe ON messages (room, user_id, client_id);
"""


def fresh_pg(postgres: PostgresServer) -> str:
    return postgres.create_database("t" + uuid.uuid4().hex[:12])


async def schema_diffs(url: str) -> list[Any]:
    """What Alembic's autogenerate would still change (``alembic check``)."""
    engine = create_async_engine(driver_url(url))
    try:
        async with engine.connect() as conn:
            opts = {"compare_type": True, "compare_server_default": True, "include_object": include_object}
            return await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c, opts=opts), metadata))
    finally:
        await engine.dispose()


# --- migrations ----------------------------------------------------------------


async def test_upgrade_empty_postgres_matches_schema(postgres: PostgresServer) -> None:
    url = fresh_pg(postgres)
    upgrade(url)
    upgrade(url.replace("postgresql://", "postgres://"))  # the PaaS spelling; a second run is a no-op
    assert await schema_diffs(url) == []


async def test_upgrade_empty_sqlite_matches_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    upgrade(url)
    upgrade(url)
    assert await schema_diffs(url) == []


async def test_upgrade_keeps_an_old_embedded_file(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SQLITE_SCHEMA)
        db.execute("INSERT INTO rooms VALUES ('general', 'e-old', 2)")
        for seq in (1, 2):
            body = message("general", seq, text=f"old {seq}")
            db.execute(
                "INSERT INTO messages VALUES ('general', ?, 'u1', ?, ?)",
                (seq, f"c{seq}", orjson.dumps(body)),
            )
    url = f"sqlite:///{path}"
    upgrade(url)
    assert await schema_diffs(url) == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name, epoch, last_seq, last_rev, archived_seq FROM rooms").fetchall() == [
            ("general", "e-old", 2, 0, 0)
        ]
        assert db.execute("SELECT seq, ts, rev FROM messages ORDER BY seq").fetchall() == [
            (1, 1_700_000_000_001, 0),
            (2, 1_700_000_000_002, 0),
        ]
    archive = Archive(url)
    await archive.open()
    try:
        page, more = await archive.latest("general", 10)
        assert [m["text"] for m in page] == ["old 1", "old 2"] and not more
        # the old rows take part in the archive like any other
        assert await archive.write([sent("general", 3)]) == {"general": 3}
    finally:
        await archive.close()


async def test_upgrade_keeps_the_accounts_of_an_old_embedded_file(tmp_path: Path) -> None:
    """A file ``SqliteAccounts`` made before 0003: its accounts and sessions stay, and it still serves them."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SQLITE_SCHEMA)
    old = SqliteAccounts(str(path))
    await old.open()
    try:
        ada = await old.create("ada", "Ada Lovelace", "$argon2id$ada")
        bob = await old.create("bob", "Bob", "$argon2id$bob")
        session = await old.start_session(ada.id, 3600)
    finally:
        await old.close()
    url = f"sqlite:///{path}"
    upgrade(url)
    # sessions is the embedded store's own table, not the system of record's
    diffs = await schema_diffs(url)
    assert [d for d in diffs if not (d[0] == "remove_table" and d[1].name == "sessions")] == []
    engine = create_async_engine(driver_url(url))
    try:
        async with engine.connect() as conn:
            rows = [tuple(r) for r in await conn.execute(select(accounts).order_by(accounts.c.username))]
    finally:
        await engine.dispose()
    assert rows == [(a.id, a.username, a.name, a.password_hash, a.created_at) for a in (ada, bob)]
    again = SqliteAccounts(str(path))
    await again.open()
    try:
        assert await again.by_username("ada") == ada and await again.by_id(bob.id) == bob
        assert await again.session_account(session) == ada.id
        with pytest.raises(UsernameTaken):
            await again.create("bob", "another Bob", "h")
    finally:
        await again.close()


async def test_release_phase_upgrades_database_url(postgres: PostgresServer) -> None:
    url = fresh_pg(postgres).replace("postgresql://", "postgres://")
    env = {**os.environ, "DATABASE_URL": url}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "backend.db.migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert await schema_diffs(url) == []


# --- Archive ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def archive(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Archive]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'archive.db'}"
    else:
        url = fresh_pg(request.getfixturevalue("postgres"))
    upgrade(url)
    arch = Archive(url)
    await arch.open()
    yield arch
    await arch.close()


async def dump(archive: Archive) -> dict[str, list[tuple[Any, ...]]]:
    async with archive.engine.connect() as conn:
        return {
            table.name: [tuple(r) for r in await conn.execute(select(table).order_by(*table.primary_key.columns))]
            for table in (rooms, messages, updates)
        }


async def test_same_batch_twice_leaves_the_same_rows(archive: Archive) -> None:
    batch = [sent("r", s) for s in range(1, 6)] + [changed("r", 2, 1), changed("r", 3, 2, "delete")]
    assert await archive.write(batch) == {"r": 5}
    first = await dump(archive)
    assert await archive.write(batch) == {"r": 5}
    assert await archive.write(list(reversed(batch))) == {"r": 5}
    assert await dump(archive) == first
    assert len(first["messages"]) == 5 and len(first["updates"]) == 2
    assert await archive.room_state("r") == (5, 2, 5)
    assert await archive.rooms() == ["r"]


async def test_an_older_rev_never_overwrites_a_newer(archive: Archive) -> None:
    await archive.write([sent("r", 1, text="v0")])
    await archive.write([changed("r", 1, 3, text="v3")])
    await archive.write([changed("r", 1, 2, text="v2"), sent("r", 1, text="v0")])  # redelivered late
    page, _ = await archive.latest("r", 10)
    assert [(m["text"], m["rev"]) for m in page] == [("v3", 3)]
    await archive.write([changed("r", 1, 4, "delete")])
    page, _ = await archive.latest("r", 10)
    assert page[0]["deleted"] is True and "text" not in page[0]
    async with archive.engine.connect() as conn:
        bodies = (await conn.execute(select(messages.c.body))).scalars().all()
    assert not any("v3" in b or "v0" in b for b in bodies)  # the text is gone from the database


async def test_archived_seq_stops_below_a_hole(archive: Archive) -> None:
    assert await archive.write([sent("r", s) for s in (1, 2, 4, 5)]) == {"r": 2}
    assert await archive.write([sent("q", 2)]) == {"q": 0}
    assert await archive.room_state("r") == (5, 0, 2)
    assert await archive.write([sent("r", 3), sent("q", 1)]) == {"q": 2, "r": 5}
    assert await archive.room_state("r") == (5, 0, 5)


async def test_archived_seq_walks_past_the_check_window(archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive_module, "GAP_WINDOW", 3)
    await archive.write([sent("r", s) for s in range(2, 12)])
    assert await archive.write([sent("r", 1)]) == {"r": 11}


async def test_updates_after_gives_current_states_once(archive: Archive) -> None:
    await archive.write([sent("r", s, text=f"m{s}") for s in range(1, 6)])
    await archive.write(
        [
            changed("r", 2, 1, text="m2 edited", edited_ts=1),
            changed("r", 4, 2, "reaction", text="m4", reactions={"👍": ["u2"]}),
            changed("r", 2, 3, text="m2 again", edited_ts=2),
            changed("r", 5, 4, "delete"),
        ]
    )
    got = await archive.updates_after("r", 0, 5, 10)
    assert [(m["seq"], m["rev"]) for m in got] == [(4, 2), (2, 3), (5, 4)]
    assert got[0]["reactions"] == {"👍": ["u2"]} and got[1]["text"] == "m2 again" and got[2]["deleted"]
    assert [m["seq"] for m in await archive.updates_after("r", 2, 5, 10)] == [2, 5]
    assert [m["seq"] for m in await archive.updates_after("r", 0, 4, 10)] == [4, 2]
    assert [m["seq"] for m in await archive.updates_after("r", 0, 5, 2)] == [4, 2]
    assert await archive.updates_after("r", 4, 5, 10) == []
    assert await archive.room_state("r") == (5, 4, 5)


async def test_latest_and_after_page_the_whole_room(archive: Archive) -> None:
    await archive.write([sent("r", s) for s in range(1, 251)])
    seen: list[int] = []
    before = None
    while True:
        page, more = await archive.latest("r", 40, before_seq=before)
        seen = [m["seq"] for m in page] + seen
        if not more:
            break
        before = page[0]["seq"]
    assert seen == list(range(1, 251))
    forward: list[int] = []
    while batch := await archive.after("r", forward[-1] if forward else 0, 60):
        forward += [m["seq"] for m in batch]
    assert forward == list(range(1, 251))
    assert await archive.latest("nowhere", 10) == ([], False)
    assert await archive.room_state("nowhere") is None


async def test_a_reused_client_id_never_blocks_the_archive(archive: Archive) -> None:
    """After Redis lost its dedupe keys, a resend can come back under a new seq."""
    await archive.write([sent("r", 1, client_id="same")])
    assert await archive.write([sent("r", 2, client_id="same"), sent("r", 3, client_id="other")]) == {"r": 3}
    page, _ = await archive.latest("r", 10)
    assert [m["client_id"] for m in page] == ["same", "same", "other"]


async def test_epoch_from_the_events(archive: Archive) -> None:
    await archive.write([sent("r", 1)])
    async with archive.engine.connect() as conn:
        assert (await conn.execute(select(rooms.c.epoch))).scalar_one() == DEFAULT_EPOCH
    await archive.write([sent("r", 2) | {"epoch": "e2"}])
    await archive.write([sent("r", 3)])
    async with archive.engine.connect() as conn:
        assert (await conn.execute(select(rooms.c.epoch))).scalar_one() == "e2"


async def test_concurrent_writers_of_one_room_leave_no_false_hole(archive: Archive) -> None:
    """Two archivers sharing the group: the room row lock makes each see the other's rows."""
    for round_ in range(5):
        base = round_ * 100
        odd = [sent("r", base + s) for s in range(1, 101, 2)]
        even = [sent("r", base + s) for s in range(2, 101, 2)]
        await asyncio.gather(archive.write(odd), archive.write(even))
        assert (await archive.room_state("r"))[2] == base + 100


async def test_ping(archive: Archive) -> None:
    assert await archive.ping()
