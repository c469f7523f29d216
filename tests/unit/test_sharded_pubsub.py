"""``backend.sharded_pubsub``: a room channel's link to its master, lost and taken again.

Against the session's 3-master cluster (``tests.support.RedisCluster``)."""

from __future__ import annotations

import asyncio

from backend import redis_client
from backend.sharded_pubsub import Event, ShardedSubscriber
from tests.support import RedisCluster


async def next_event(subscriber: ShardedSubscriber, kinds: set[str]) -> Event:
    """The next event of one of ``kinds`` (the others skipped)."""
    while True:
        event = await asyncio.wait_for(subscriber.events.get(), 10)
        if event[0] in kinds:
            return event


async def test_a_killed_link_is_taken_again_and_announced_for_a_sweep(redis_cluster: RedisCluster) -> None:
    """A lost link must come back through ``rehomed`` (the relay sweeps the store on it), not
    through redis-py reconnecting by itself: that re-SSUBSCRIBEs every channel of the node
    in one command, which Redis refuses across slots, and within one slot nobody is told
    that messages published meanwhile were lost."""
    room = redis_cluster.room_on(2, "link")
    channel = "fleetchat:{" + room + "}"
    cluster = await redis_client.connect(redis_cluster.url)
    publisher = await redis_client.connect(redis_cluster.url)
    subscriber = ShardedSubscriber(cluster, "fc-test-shared", {"protocol": 2}, retry=0.05)
    try:
        await subscriber.start([channel])
        assert await next_event(subscriber, {"subscribe"}) in {
            ("subscribe", channel, None),
            ("subscribe", "fc-test-shared", None),
        }
        redis_cluster.master_of(channel).command("CLIENT", "KILL", "TYPE", "pubsub")
        assert await next_event(subscriber, {"unsubscribe", "rehomed"}) == ("unsubscribe", channel, None)
        assert await next_event(subscriber, {"rehomed"}) == ("rehomed", "", None)
        await publisher.spublish(channel, "after")
        assert await next_event(subscriber, {"message"}) == ("message", channel, b"after")
    finally:
        await subscriber.close()
        await cluster.aclose()
        await publisher.aclose()
