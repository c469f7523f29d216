"""The Redis store over a 3-master Redis Cluster, where a script may touch one hash slot
only: what the contract suite (test_store_contract.py, which runs over the cluster too)
cannot see from one room. Rooms are picked so their slots live on different masters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from backend.lifecycle import Change
from backend.redis_client import make_client, partition_key
from backend.store.base import RateLimited, RoomAccess
from backend.store.redis import MENTIONS_KEY, RedisStore
from tests.support import RedisCluster

ALICE = {"id": "anon:alice-cluster", "name": "alice"}


@pytest.fixture
async def store(redis_cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    s = RedisStore(redis_cluster.url, dedupe_ttl=3600)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def raw(redis_cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = make_client(redis_cluster.url, cluster=True)
    yield client
    await client.aclose()


def rooms_on_every_master(cluster: RedisCluster, prefix: str) -> list[str]:
    rooms = [cluster.room_on(i, prefix) for i in range(3)]
    assert len({cluster.master_of("{" + r + "}").port for r in rooms}) == 3
    return rooms


async def test_rooms_on_three_masters_list_count_and_resume_together(
    store: RedisStore, redis_cluster: RedisCluster
) -> None:
    rooms = rooms_on_every_master(redis_cluster, "spread")
    assert store.cluster
    for n, room in enumerate(rooms, start=1):
        for i in range(n):
            await store.append(room, ALICE, f"m{i}", f"c{room}{i}", i)
    assert await store.last_seqs(rooms) == [1, 2, 3]  # one MGET per slot
    epochs = await store.epochs(rooms)
    assert all(epochs) and len(set(epochs)) == 3
    assert set(rooms) <= set(await store.rooms())
    assert [m["text"] for m in await store.after(rooms[2], 0, 10)] == ["m0", "m1", "m2"]


async def test_mentions_land_in_the_partition_of_each_rooms_slot(
    store: RedisStore, raw: ClusterClient, redis_cluster: RedisCluster
) -> None:
    rooms = rooms_on_every_master(redis_cluster, "mention")
    for room in rooms:
        await store.append(room, ALICE, "hi @bob", "c-" + room, 1)
        await store.append(room, ALICE, "no mention", "d-" + room, 2)
    assert not await raw.exists(MENTIONS_KEY)  # no fleet-wide stream over a cluster
    for room in rooms:
        stream = partition_key("mentions", "fc:{" + room + "}:seq")
        assert redis_cluster.master_of(stream).port == redis_cluster.master_of("{" + room + "}").port
        bodies = [orjson.loads(f[b"m"]) for _id, f in await raw.xrange(stream)]
        assert [(b["room"], b["text"]) for b in bodies if b["room"] == room] == [(room, "hi @bob")]


async def test_the_per_user_rate_is_fleet_wide_across_masters(redis_cluster: RedisCluster) -> None:
    """Two instances, rooms on three masters: one bucket per user (its own slot)."""
    user = {"id": "anon:rate-" + redis_cluster.room_on(0, "u"), "name": "rater"}
    one = RedisStore(redis_cluster.url, dedupe_ttl=3600, user_rate=(0.01, 4))
    two = RedisStore(redis_cluster.url, dedupe_ttl=3600, user_rate=(0.01, 4))
    await one.open()
    await two.open()
    try:
        rooms = rooms_on_every_master(redis_cluster, "rate")
        await one.append(rooms[0], user, "1", "c1", 1)
        await two.append(rooms[1], user, "2", "c2", 2)
        # a resent message is stored once and costs no token (it is given back)
        again = await two.append(rooms[1], user, "2", "c2", 2)
        assert not again.created
        await one.append(rooms[2], user, "3", "c3", 3)
        await two.append(rooms[0], user, "4", "c4", 4)
        for store, room in ((one, rooms[1]), (two, rooms[2])):
            with pytest.raises(RateLimited):
                await store.append(room, user, "5", "c5", 5)
        # a change is limited by the same bucket
        with pytest.raises(RateLimited):
            await one.change(Change(rooms[0], 1, "edit", user, "c-edit", 6, text="x"))
    finally:
        await one.close()
        await two.close()


async def test_private_rooms_on_three_masters_stay_private(store: RedisStore, redis_cluster: RedisCluster) -> None:
    rooms = rooms_on_every_master(redis_cluster, "priv")
    for room in rooms:
        assert await store.create_private(room, RoomAccess(False, ALICE["id"]), [ALICE["id"]])
        assert not await store.create_private(room, RoomAccess(False, ALICE["id"]), [ALICE["id"]])
    assert set(rooms) <= await store.private_rooms()
    assert set(rooms) <= set(await store.private_rooms_of(ALICE["id"]))
    assert all([await store.is_member(r, ALICE["id"]) for r in rooms])
    # a public room's name cannot be taken for a private one, and stays public
    public = redis_cluster.room_on(1, "pub")
    await store.append(public, ALICE, "hello", "c-pub", 1)
    assert not await store.create_private(public, RoomAccess(False, ALICE["id"]), [ALICE["id"]])
    assert public not in await store.private_rooms()


async def test_per_room_channels_are_published_with_spublish(store: RedisStore, redis_cluster: RedisCluster) -> None:
    """The lead's layout: channel ``fleetchat:{<room>}`` in the room's slot, sharded pub/sub."""
    rooms = rooms_on_every_master(redis_cluster, "chan")
    store.announce_on(lambda room: "fleetchat:{" + room + "}", "host-1")
    listener = make_client(redis_cluster.url, cluster=True, socket_timeout=None)
    await listener.initialize()  # the slot map, which routes each shard channel
    pubsub = listener.pubsub()
    try:
        for room in rooms:
            await pubsub.ssubscribe("fleetchat:{" + room + "}")
        got: dict[str, dict] = {}

        async def listen() -> None:
            while len(got) < 3:
                message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=1.0)
                envelope = orjson.loads(message["data"]) if message else {}
                if envelope.get("event") == "message":  # a new room's epoch event comes first
                    got[message["channel"].decode()] = envelope

        reader = asyncio.create_task(listen())
        await asyncio.sleep(0.2)
        results = [await store.append(room, ALICE, "to " + room, "c-" + room, 1) for room in rooms]
        assert all(r.announced for r in results)
        await asyncio.wait_for(reader, 10)
        for room in rooms:
            envelope = got["fleetchat:{" + room + "}"]
            assert envelope["room"] == room and envelope["data"][0]["text"] == "to " + room
        # a fleet-wide channel cannot share every room's slot: the store does not announce,
        # and the caller publishes itself
        store.announce_on("fleetchat", "host-1")
        assert not (await store.append(rooms[0], ALICE, "plain", "c-plain", 2)).announced
    finally:
        await pubsub.aclose()
        await listener.aclose()
