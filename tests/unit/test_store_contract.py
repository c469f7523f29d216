"""One suite for the store contract, run against SQLite and against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from backend.store.base import MessageStore
from backend.store.redis import RedisStore
from backend.store.sqlite import SqliteStore

ALICE = {"id": "anon:alice", "name": "alice"}
BOB = {"id": "anon:bob", "name": "bob"}


@pytest.fixture(params=["sqlite", "redis"])
async def store(request, tmp_path, redis_server) -> AsyncIterator[MessageStore]:
    s: MessageStore
    if request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "chat.db"), history_limit=1000)
    else:
        s = RedisStore(redis_server.url, history_limit=1000, dedupe_ttl=3600)
    await s.open()
    yield s
    await s.close()


def room() -> str:
    return "r-" + uuid.uuid4().hex[:10]


async def test_append_assigns_gap_free_seq_and_sortable_ids(store):
    r = room()
    results = [await store.append(r, ALICE, f"m{i}", f"c{i}", 1000 + i) for i in range(12)]
    seqs = [res.message["seq"] for res in results]
    ids = [res.message["id"] for res in results]
    assert seqs == list(range(1, 13))
    assert ids == sorted(ids) and len(set(ids)) == 12
    assert all(res.created for res in results)
    m = results[0].message
    assert m == {"id": m["id"], "seq": 1, "room": r, "user": ALICE, "text": "m0", "ts": 1000, "client_id": "c0"}


async def test_concurrent_appends_never_share_a_seq(store):
    r = room()
    results = await asyncio.gather(*(store.append(r, BOB, "x", f"c{i}", 1) for i in range(200)))
    assert sorted(res.message["seq"] for res in results) == list(range(1, 201))


async def test_same_client_id_is_stored_once_per_user(store):
    r = room()
    first = await store.append(r, ALICE, "hello", "dup", 1)
    again = await store.append(r, ALICE, "hello", "dup", 2)
    other_user = await store.append(r, BOB, "hello", "dup", 3)
    assert first.created and not again.created and other_user.created
    assert again.message == first.message
    assert (await store.room_info(r)).last_seq == 2


async def test_latest_pages_backwards_and_after_reads_forwards(store):
    r = room()
    for i in range(30):
        await store.append(r, ALICE, f"m{i}", f"c{i}", i)
    page, more = await store.latest(r, 10)
    assert [m["seq"] for m in page] == list(range(21, 31)) and more
    page, more = await store.latest(r, 10, before_seq=5)
    assert [m["seq"] for m in page] == [1, 2, 3, 4] and not more
    assert await store.latest(r, 10, before_seq=1) == ([], False)
    assert await store.latest(r, 10, before_seq=0) == ([], False)  # found by fuzzing the fleet
    assert [m["seq"] for m in await store.after(r, 27, 100)] == [28, 29, 30]
    assert [m["seq"] for m in await store.after(r, 0, 3)] == [1, 2, 3]
    assert await store.after(r, 30, 10) == []


async def test_room_info_creates_rooms_with_a_stable_epoch(store):
    r = room()
    assert await store.room_info(r, create=False) is None
    info = await store.room_info(r)
    assert info.last_seq == 0 and info.epoch
    await store.append(r, ALICE, "x", "c", 1)
    again = await store.room_info(r)
    assert again.epoch == info.epoch and again.last_seq == 1
    assert r in await store.rooms()
    assert await store.last_seqs([r, room()]) == [1, 0]


async def test_history_is_capped_per_room(tmp_path, redis_server):
    for s in (SqliteStore(str(tmp_path / "cap.db"), history_limit=100), RedisStore(redis_server.url, 100, 3600)):
        await s.open()
        r = room()
        for i in range(450):
            await s.append(r, ALICE, f"m{i}", f"c{i}", i)
        kept = await s.after(r, 0, 10_000)
        assert 100 <= len(kept) < 450, type(s).__name__
        assert kept[-1]["seq"] == 450
        await s.close()


async def test_sqlite_history_survives_reopening(tmp_path):
    path = str(tmp_path / "persist.db")
    s = SqliteStore(path, 1000)
    await s.open()
    await s.append("general", ALICE, "before restart", "c1", 1)
    epoch = (await s.room_info("general")).epoch
    await s.close()
    s = SqliteStore(path, 1000)
    await s.open()
    assert [m["text"] for m in (await s.latest("general", 10))[0]] == ["before restart"]
    assert (await s.room_info("general")).epoch == epoch
    assert (await s.append("general", ALICE, "after", "c2", 2)).message["seq"] == 2
    assert not (await s.append("general", ALICE, "before restart", "c1", 3)).created
    await s.close()


async def test_dedupe_never_confuses_two_users_whose_ids_and_client_ids_share_a_colon(store):
    r = room()
    first = await store.append(r, {"id": "anon:a", "name": "a"}, "from a", "b:c", 1)
    second = await store.append(r, {"id": "anon:a:b", "name": "a:b"}, "from a:b", "c", 2)
    assert first.created and second.created and second.message["seq"] == 2
