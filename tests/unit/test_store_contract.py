"""One suite for the store contract, run against SQLite and against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from backend.lifecycle import Change
from backend.models import ChatError
from backend.store.base import MessageStore
from backend.store.redis import RedisStore
from backend.store.sqlite import SqliteStore

ALICE = {"id": "anon:alice", "name": "alice"}
BOB = {"id": "anon:bob", "name": "bob"}


@pytest.fixture(params=["sqlite", "redis", "cluster"])
async def store(request, tmp_path, redis_server) -> AsyncIterator[MessageStore]:
    """The contract's stores: SQLite, a standalone Redis, and a 3-master Redis Cluster
    (each test's random room lands on whichever master owns its slot)."""
    s: MessageStore
    if request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "chat.db"))
    elif request.param == "cluster":
        s = RedisStore(request.getfixturevalue("redis_cluster").url, dedupe_ttl=3600)
    else:
        s = RedisStore(redis_server.url, dedupe_ttl=3600)
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


async def test_a_room_keeps_every_message_past_the_old_ten_thousand_cap(store):
    r = room()
    for start in range(0, 10_050, 250):
        await asyncio.gather(
            *(store.append(r, ALICE, f"m{i}", f"c{i}", i) for i in range(start, min(start + 250, 10_050)))
        )
    first, more = await store.latest(r, 5, before_seq=6)
    assert [m["seq"] for m in first] == [1, 2, 3, 4, 5] and not more
    kept = await store.after(r, 0, 20_000)
    assert [m["seq"] for m in kept] == list(range(1, 10_051))


async def test_sqlite_history_survives_reopening(tmp_path):
    path = str(tmp_path / "persist.db")
    s = SqliteStore(path)
    await s.open()
    await s.append("general", ALICE, "before restart", "c1", 1)
    epoch = (await s.room_info("general")).epoch
    await s.close()
    s = SqliteStore(path)
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


def change(r: str, seq: int, kind: str, actor=ALICE, cid: str = "", **kw) -> Change:
    return Change(r, seq, kind, actor, cid or uuid.uuid4().hex, 5000, **kw)  # type: ignore[arg-type]


async def test_an_edit_changes_the_stored_text_and_numbers_the_change(store):
    r = room()
    await store.append(r, ALICE, "helo", "c1", 1)
    result = await store.change(change(r, 1, "edit", text="hello"))
    assert result.created and result.update["rev"] == 1 and result.update["kind"] == "edit"
    m = result.update["message"]
    assert (m["text"], m["edited_ts"], m["rev"], m["id"]) == ("hello", 5000, 1, "000000000001")
    assert (await store.latest(r, 10))[0][0] == m
    assert (await store.room_info(r)).last_rev == 1
    assert await store.last_revs([r, room()]) == [1, 0]


async def test_only_the_author_edits_and_only_the_author_or_a_moderator_deletes(store):
    r = room()
    await store.append(r, ALICE, "mine", "c1", 1)
    with pytest.raises(ChatError) as refused:
        await store.change(change(r, 1, "edit", actor=BOB, text="hijacked"))
    assert refused.value.code == "forbidden"
    with pytest.raises(ChatError) as refused:
        await store.change(change(r, 1, "delete", actor=BOB))
    assert refused.value.code == "forbidden"
    assert (await store.latest(r, 1))[0][0]["text"] == "mine"
    gone = await store.change(change(r, 1, "delete", actor=BOB, moderator=True))
    assert gone.created and gone.update["message"]["deleted"] and gone.update["message"]["text"] == ""
    with pytest.raises(ChatError) as refused:
        await store.change(change(r, 1, "edit", text="back"))
    assert refused.value.code == "not_found"
    again = await store.change(change(r, 1, "delete"))
    assert not again.created and (await store.room_info(r)).last_rev == 1


async def test_a_delete_leaves_a_tombstone_without_its_text_or_reactions(store):
    r = room()
    await store.append(r, ALICE, "secret plan", "c1", 1)
    await store.change(change(r, 1, "reaction", actor=BOB, emoji="👍"))
    await store.change(change(r, 1, "delete"))
    [m], _ = await store.latest(r, 10)
    assert m["deleted"] is True and m["text"] == "" and "reactions" not in m
    assert "secret plan" not in repr(await store.updates_after(r, 0, 10))


async def test_reactions_are_per_user_and_taking_one_back_removes_it(store):
    r = room()
    await store.append(r, ALICE, "vote", "c1", 1)
    await store.change(change(r, 1, "reaction", actor=BOB, emoji="👍"))
    await store.change(change(r, 1, "reaction", actor=ALICE, emoji="👍"))
    same = await store.change(change(r, 1, "reaction", actor=ALICE, emoji="👍"))
    assert not same.created
    family = "👨\u200d👩\u200d👧"
    state = (await store.change(change(r, 1, "reaction", actor=BOB, emoji=family))).update["message"]
    assert state["reactions"] == {"👍": [BOB["id"], ALICE["id"]], family: [BOB["id"]]}
    await store.change(change(r, 1, "reaction", actor=BOB, emoji="👍", on=False))
    state = (await store.change(change(r, 1, "reaction", actor=BOB, emoji=family, on=False))).update["message"]
    assert state["reactions"] == {"👍": [ALICE["id"]]}
    state = (await store.change(change(r, 1, "reaction", actor=ALICE, emoji="👍", on=False))).update["message"]
    assert "reactions" not in state and state["rev"] == 6


async def test_a_resent_change_is_applied_once(store):
    r = room()
    await store.append(r, ALICE, "v1", "c1", 1)
    first = await store.change(change(r, 1, "edit", text="v2", cid="e1"))
    await store.change(change(r, 1, "edit", text="v3", cid="e2"))
    resent = await store.change(change(r, 1, "edit", text="v2", cid="e1"))
    assert first.created and not resent.created
    assert resent.update["message"]["text"] == "v3" and (await store.room_info(r)).last_rev == 2


async def test_changes_to_unknown_messages_and_replies_to_unknown_ids_are_refused(store):
    r = room()
    await store.append(r, ALICE, "one", "c1", 1)
    for bad in (change(r, 2, "edit", text="x"), change(room(), 1, "reaction", emoji="x")):
        with pytest.raises(ChatError) as refused:
            await store.change(bad)
        assert refused.value.code == "not_found"
    with pytest.raises(ChatError) as refused:
        await store.append(r, BOB, "re", "c2", 2, reply_to=5)
    assert refused.value.code == "not_found"
    reply = await store.append(r, BOB, "re", "c3", 3, reply_to=1)
    assert reply.message["reply_to"] == "000000000001" and reply.message["seq"] == 2
    assert (await store.after(r, 1, 5))[0]["reply_to"] == "000000000001"


async def test_updates_after_reads_every_change_in_rev_order_with_the_state_now(store):
    r = room()
    for i in range(3):
        await store.append(r, ALICE, f"m{i}", f"c{i}", i)
    await store.change(change(r, 1, "edit", text="m0 edited"))
    await store.change(change(r, 3, "reaction", actor=BOB, emoji="🎉"))
    await store.change(change(r, 1, "edit", text="m0 again"))
    events = await store.updates_after(r, 0, 10)
    assert [(e["rev"], e["id"], e["kind"]) for e in events] == [
        (1, "000000000001", "edit"),
        (2, "000000000003", "reaction"),
        (3, "000000000001", "edit"),
    ]
    assert events[0]["message"]["text"] == "m0 again"  # the state now, not then
    assert [e["rev"] for e in await store.updates_after(r, 2, 10)] == [3]
    assert [e["rev"] for e in await store.updates_after(r, 0, 2)] == [1, 2]


async def test_changed_since_gives_each_changed_message_once_up_to_a_seq(store):
    r = room()
    for i in range(4):
        await store.append(r, ALICE, f"m{i}", f"c{i}", i)
    await store.change(change(r, 2, "edit", text="a"))
    await store.change(change(r, 4, "edit", text="b"))
    await store.change(change(r, 2, "edit", text="c"))
    await store.change(change(r, 1, "reaction", actor=BOB, emoji="👀"))
    changed, more = await store.changed_since(r, 0, 3, 10)
    assert [(u["id"], u["rev"], u["message"].get("text")) for u in changed] == [
        ("000000000002", 3, "c"),
        ("000000000001", 4, "m0"),
    ]
    assert not more
    changed, more = await store.changed_since(r, 3, 3, 10)
    assert [u["rev"] for u in changed] == [4]
    changed, more = await store.changed_since(r, 0, 4, 1)
    assert [u["rev"] for u in changed] == [4] and more


async def test_redis_moves_history_of_the_first_release_into_the_new_layout(redis_server):
    import redis.asyncio as aioredis

    r = room()
    old = aioredis.Redis.from_url(redis_server.url)
    tag = "{" + r + "}"
    await old.delete("fc:layout")
    await old.sadd("fc:rooms", r)
    await old.set(f"fc:{tag}:epoch", "e1")
    await old.set(f"fc:{tag}:seq", 2)
    for seq in (1, 2):
        user = {"id": "anon:a", "name": "a"}
        body = orjson.dumps(
            {"id": f"{seq:012d}", "seq": seq, "room": r, "user": user, "text": f"old {seq}", "ts": 1, "client_id": "c"}
        )
        await old.xadd(f"fc:{tag}:log", {"m": body}, id=f"{seq}-0")
    await old.aclose()
    s = RedisStore(redis_server.url, dedupe_ttl=3600)
    await s.open()
    assert [m["text"] for m in (await s.latest(r, 10))[0]] == ["old 1", "old 2"]
    assert (await s.append(r, ALICE, "new", "c9", 3)).message["seq"] == 3
    await s.close()


async def test_an_embedded_file_of_the_first_release_opens_with_its_history_and_can_change(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE rooms (name TEXT PRIMARY KEY, epoch TEXT NOT NULL, last_seq INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, user_id TEXT NOT NULL,
            client_id TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID;
        CREATE UNIQUE INDEX messages_dedupe ON messages (room, user_id, client_id);
        INSERT INTO rooms VALUES ('general', 'e0', 1);
        """
    )
    body = orjson.dumps(
        {"id": "000000000001", "seq": 1, "room": "general", "user": ALICE, "text": "old", "ts": 7, "client_id": "c1"}
    )
    old.execute("INSERT INTO messages VALUES ('general', 1, ?, 'c1', ?)", (ALICE["id"], body))
    old.commit()
    old.close()
    s = SqliteStore(path)
    await s.open()
    assert [m["text"] for m in (await s.latest("general", 10))[0]] == ["old"]
    assert (await s.room_info("general")).epoch == "e0"
    edited = await s.change(change("general", 1, "edit", text="old, edited"))
    assert edited.created and edited.update["rev"] == 1
    assert (await s.append("general", BOB, "new", "c2", 8)).message["seq"] == 2
    await s.close()


async def test_read_marks_only_move_forward_and_a_first_join_starts_read(store):
    r, user = room(), "acct-" + uuid.uuid4().hex[:6]
    assert await store.mark_read(user, r, 7, first=True) == 7
    assert await store.mark_read(user, r, 9, first=True) == 7, "a later join keeps the mark"
    assert await store.mark_read(user, r, 5) == 7
    assert await store.mark_read(user, r, 12) == 12
    other = room()
    await store.mark_read(user, other, 3)
    assert await store.reads_of(user) == {r: 12, other: 3}
    assert await store.reads_of("nobody-" + uuid.uuid4().hex) == {}


async def test_a_private_room_is_created_once_and_only_when_the_name_is_free(store):
    from backend.store.base import RoomAccess

    r, taken = room(), room()
    await store.room_info(taken)  # a public room exists under that name
    assert not await store.create_private(taken, RoomAccess(owner="u1"), ["u1"])
    assert await store.access(taken) is None
    assert await store.create_private(r, RoomAccess(owner="u1"), ["u1"])
    assert not await store.create_private(r, RoomAccess(owner="u2"), ["u2"])
    assert await store.access(r) == RoomAccess(dm=False, owner="u1")
    assert await store.room_info(r, create=False) is not None
    assert await store.set_member(r, "u2", True) and not await store.set_member(r, "u2", True)
    assert await store.members_of(r) == ["u1", "u2"]
    assert await store.is_member(r, "u2") and not await store.is_member(r, "u3")
    assert r in await store.private_rooms_of("u2")
    assert await store.set_member(r, "u2", False)
    assert not await store.is_member(r, "u2") and r not in await store.private_rooms_of("u2")
