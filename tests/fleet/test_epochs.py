"""A Redis that loses data (restarted empty, or flushed) starts a new epoch that every
instance and client notices, and every message acknowledged after it is delivered live."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support import Backend, async_wait_for, http_get


async def _after_a_loss_new_messages_are_delivered_live(
    instances: list[Backend], clients, r: str, lose: Callable[[], None]
) -> None:
    a, b = instances
    sender = await clients(a.url, "sender")
    reader = await clients(b.url, "reader")
    first = await sender.join(r)
    await reader.join(r)
    for i in range(5):
        assert (await sender.send(r, f"old {i}"))["ok"]
    await async_wait_for(lambda: len(reader.messages(r)) == 5, what="the old messages")

    lose()
    for backend in (a, b):
        await async_wait_for(lambda u=backend.url: http_get(u + "/readyz")[0] == 200, what=f"{backend.url} back")
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


async def test_after_redis_is_flushed_new_messages_are_delivered_live(fleet, clients, fleet_redis):
    """Over the cluster only the room's master is flushed: the other masters keep their keys."""
    r = fleet_redis.room("epoch", master=1)
    holder = fleet_redis.holder_of("{" + r + "}")
    await _after_a_loss_new_messages_are_delivered_live(fleet(2), clients, r, lambda: holder.command("FLUSHALL"))


@pytest.mark.redis_modes("standalone")
async def test_after_redis_restarts_empty_new_messages_are_delivered_live(fleet, clients, private_redis, fleet_redis):
    """Standalone only: a cluster node that restarts without its files has lost its
    nodes.conf too, so it is no longer the member that served those slots and does not
    rejoin by itself (an operator adds it back). A cluster master losing its data while it
    stays a member is the flushed test above; one restarted with its files, test_cluster.py."""

    def lose() -> None:
        private_redis.wipe()
        private_redis.start()

    r = fleet_redis.room("epoch")
    await _after_a_loss_new_messages_are_delivered_live(fleet(2, redis=private_redis), clients, r, lose)
