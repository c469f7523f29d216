"""Per-room routing: an instance hears a room's pub/sub channel only while it has a listener there."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets

from tests.support import async_wait_for, scrape

pytestmark = pytest.mark.fleet


async def test_an_instance_without_members_receives_none_of_a_rooms_traffic(fleet, clients, fleet_redis):
    a, b = fleet(2)
    r = fleet_redis.room("r", master=2)
    alice = await clients(a.url, "alice")
    bob = await clients(a.url, "bob")
    await alice.join(r)
    await bob.join(r)
    assert fleet_redis.subscribers(r) == 1
    before = scrape(b.url, "fleetchat_pubsub_received_total")
    for n in range(30):
        assert (await alice.send(r, f"m{n}"))["ok"]
    await alice.call("typing", {"room": r, "typing": True})
    await async_wait_for(lambda: len(bob.texts(r)) == 30, what="delivery on the serving instance")
    # the publishes that did reach b would be counted by now: they travel faster than the acks
    await asyncio.sleep(0.3)
    assert scrape(b.url, "fleetchat_pubsub_received_total") == before
    assert scrape(a.url, "fleetchat_room_channels") >= 1
    assert scrape(b.url, "fleetchat_room_channels") == 0


async def test_the_first_listener_subscribes_and_the_channel_goes_after_the_last_left(fleet, clients, fleet_redis):
    a, b = fleet(2, CHAT_ROOM_CHANNEL_LINGER_SECONDS="0.3")
    r = fleet_redis.room("r", master=1)
    alice = await clients(a.url, "alice")
    await alice.join(r)
    bob = await clients(b.url, "bob")
    carol = await clients(b.url, "carol")
    await bob.join(r)
    await carol.join(r)
    assert fleet_redis.subscribers(r) == 2, "one subscription per instance, however many listeners"
    assert (await bob.call("leave", {"room": r}))["ok"]
    await asyncio.sleep(0.6)
    assert fleet_redis.subscribers(r) == 2, "carol still listens on b"
    await carol.close()
    await async_wait_for(lambda: fleet_redis.subscribers(r) == 1, what="b to drop the room's channel")
    assert (await alice.send(r, "only a hears this"))["ok"]
    # back again: b subscribes before the join's history is read, so nothing falls between
    dave = await clients(b.url, "dave")
    ack = await dave.join(r)
    assert fleet_redis.subscribers(r) == 2
    assert [m["text"] for m in ack["history"]] == ["only a hears this"]
    assert (await alice.send(r, "and now b too"))["ok"]
    await async_wait_for(lambda: dave.texts(r) == ["and now b too"], what="live delivery to the rejoined instance")


async def test_joining_while_a_room_is_busy_leaves_no_gap_and_no_duplicate(fleet, clients, fleet_redis):
    a, b = fleet(2, CHAT_ROOM_CHANNEL_LINGER_SECONDS="0")
    r = fleet_redis.room("r", master=0)
    alice = await clients(a.url, "alice")
    await alice.join(r)
    sent: list[int] = []

    async def send_steadily() -> None:
        for n in range(120):
            sent.append((await alice.send(r, f"n{n}"))["seq"])

    sender = asyncio.create_task(send_steadily())
    joined = []
    for n in range(6):  # join and leave again and again on the instance without members
        await asyncio.sleep(0.05)
        bob = await clients(b.url, f"bob{n}")
        ack = await bob.join(r)
        joined.append((bob, ack))
    await sender
    for bob, ack in joined:
        start = [m["seq"] for m in ack["history"]]
        await async_wait_for(
            lambda bob=bob, ack=ack: (bob.messages(r) or [{"seq": ack["last_seq"]}])[-1]["seq"] == sent[-1],
            what="live delivery up to the last message",
        )
        live = [m["seq"] for m in bob.messages(r)]
        assert live == list(range(ack["last_seq"] + 1, sent[-1] + 1)), "live delivery continues the history"
        assert not start or start[-1] == ack["last_seq"]


async def test_the_ws_bridge_alone_keeps_its_instance_on_the_room(fleet, clients, fleet_redis):
    a, b = fleet(2)
    r = fleet_redis.room("r", master=1)
    alice = await clients(a.url, "alice")
    await alice.join(r)
    bare = await websockets.connect(b.url.replace("http", "ws") + f"/ws?room={r}&name=bare")
    try:
        await async_wait_for(lambda: fleet_redis.subscribers(r) == 2, what="the bridge's instance to subscribe")
        assert (await alice.send(r, "to the bridge"))["ok"]
        while True:
            frame = orjson.loads(await asyncio.wait_for(bare.recv(), 10))
            if frame.get("type") == "message":
                break
        assert frame["text"] == "to the bridge"
    finally:
        await bare.close()
