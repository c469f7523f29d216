"""A Redis that loses data (restarted empty, or flushed) starts a new epoch that every
instance and client notices, and every message acknowledged after it is delivered live."""

from __future__ import annotations

import uuid

import pytest

from tests.support import async_wait_for, http_get


def room() -> str:
    return "epoch-" + uuid.uuid4().hex[:10]


@pytest.mark.parametrize("loss", ["restarted empty", "flushed"])
async def test_after_redis_loses_its_data_new_messages_are_delivered_live(fleet, clients, private_redis, loss):
    a, b = fleet(2, redis=private_redis)
    r = room()
    sender = await clients(a.url, "sender")
    reader = await clients(b.url, "reader")
    first = await sender.join(r)
    await reader.join(r)
    for i in range(5):
        assert (await sender.send(r, f"old {i}"))["ok"]
    await async_wait_for(lambda: len(reader.messages(r)) == 5, what="the old messages")

    if loss == "flushed":
        private_redis.command("FLUSHALL")
    else:
        private_redis.wipe()
        private_redis.start()
        await async_wait_for(lambda: http_get(a.url + "/readyz")[0] == 200, what="instance a back")
        await async_wait_for(lambda: http_get(b.url + "/readyz")[0] == 200, what="instance b back")
    acks = []
    for i in range(3):
        ack = await sender.send(r, f"new {i}")
        while not ack["ok"]:  # the store may refuse while it reconnects: resend, as a client does
            ack = await sender.send(r, f"new {i}")
        acks.append(ack)
    assert [ack["seq"] for ack in acks] == [1, 2, 3], "the room's history began again"

    for client in (sender, reader):
        await async_wait_for(lambda c=client: c.events["epoch"], what=f"{client.name} told of the new epoch")
        [event] = client.events["epoch"]
        assert event["room"] == r and event["epoch"] != first["epoch"]
        await async_wait_for(
            lambda c=client: c.texts(r)[5:] == ["new 0", "new 1", "new 2"],
            what=f"{client.name} gets every new message live",
        )
        assert [m["seq"] for m in client.messages(r)[5:]] == [1, 2, 3]
    rejoined = await reader.join(r)
    assert rejoined["epoch"] == event["epoch"]
