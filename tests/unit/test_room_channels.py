"""RoomChannels' bookkeeping: which channels an instance asks Redis for, and when.

The listener's connection is a recorder here (this is the state machine alone; the
fleet tests run it against a real redis-server and a real Redis Cluster)."""

from __future__ import annotations

import asyncio

from backend.room_channels import RoomChannels


class Recorder:
    """Stands in for the listener's pub/sub connection: records each (un)subscribe."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[str, ...]]] = []

    async def subscribe(self, *channels: str) -> None:
        self.sent.append(("subscribe", channels))

    async def unsubscribe(self, *channels: str) -> None:
        self.sent.append(("unsubscribe", channels))


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_first_listeners_of_a_tick_share_one_subscribe_and_later_ones_send_none() -> None:
    routes, pubsub = RoomChannels("fc", linger=60), Recorder()
    routes.attach(pubsub)
    routes.add("general")
    routes.add("user:u1")
    routes.add("general")
    await settle()
    assert pubsub.sent == [("subscribe", ("fc:{general}", "fc:{user:u1}"))]
    routes.add("general")
    await settle()
    assert len(pubsub.sent) == 1 and routes.listeners("general") == 3 and routes.count() == 2


async def test_a_listener_back_within_the_linger_keeps_the_channel_and_none_drops_it_after() -> None:
    routes, pubsub = RoomChannels("fc", linger=0.05), Recorder()
    routes.attach(pubsub)
    routes.add("general")
    await settle()
    routes.remove("general")
    routes.add("general")
    await asyncio.sleep(0.1)
    assert pubsub.sent == [("subscribe", ("fc:{general}",))], "a reload does not resubscribe"
    routes.remove("general")
    assert routes.active("general"), "lingering"
    await asyncio.sleep(0.1)
    assert pubsub.sent[-1] == ("unsubscribe", ("fc:{general}",))
    assert not routes.active("general") and routes.count() == 0 and routes.wanted() == []
    routes.remove("general")  # one remove too many changes nothing
    assert routes.listeners("general") == 0


async def test_ready_waits_for_redis_to_confirm_and_a_lost_listener_unconfirms_everything() -> None:
    routes, pubsub = RoomChannels("fc", linger=60), Recorder()
    routes.attach(pubsub)
    routes.add("general")
    waiting = asyncio.create_task(routes.ready("general", timeout=5))
    await settle()
    assert not waiting.done()
    routes.confirmed("fc:{elsewhere}")  # not a room of this instance's: ignored
    routes.confirmed("fc")  # the shared channel: not a room
    await settle()
    assert not waiting.done() and routes.count() == 1
    routes.confirmed("fc:{general}")
    assert await waiting is True and routes.is_confirmed("general")
    routes.detach()
    assert not routes.is_confirmed("general") and await routes.ready("general", timeout=0.01) is False
    routes.attach(pubsub)
    assert routes.wanted() == ["fc:{general}"], "what the listener subscribes to when it is back"
    routes.confirmed("fc:{general}")
    routes.unconfirmed("fc:{general}")
    assert not routes.is_confirmed("general") and routes.listeners("general") == 1


async def test_a_room_never_joined_is_not_ready_at_once() -> None:
    routes = RoomChannels("fc", linger=60)
    assert await routes.ready("general") is False
