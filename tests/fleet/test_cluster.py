"""What only a Redis Cluster has: sharded pub/sub, and a master lost or failed over.

Everything else a fleet does is tested over the cluster too: every test in tests/fleet
runs over the standalone Redis and over the session's 3-master cluster (``fleet_redis``,
tests/fleet/conftest.py), in rooms spread over the masters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.support import RedisCluster, RedisServer, async_wait_for, subscriber_count

pytestmark = [pytest.mark.fleet, pytest.mark.redis_modes("cluster")]


@pytest.fixture
def private_cluster() -> Iterator[RedisCluster]:
    """A cluster of the test's own, for tests that kill one of its masters."""
    cluster = RedisCluster(masters=3)
    cluster.start()
    yield cluster
    cluster.stop()


def subscriptions(node: RedisServer, channel: str) -> tuple[int, int]:
    """``channel``'s (sharded, classic) subscribers on ``node``."""
    return subscriber_count(node, channel, sharded=True), subscriber_count(node, channel)


async def test_each_rooms_channel_is_a_shard_channel_on_its_own_master_only(fleet, clients, redis_cluster):
    """Sharded pub/sub: a room's channel is SSUBSCRIBEd on the master of its slot, never
    as a classic channel (which a cluster broadcasts to every node)."""
    a, b = fleet(2)
    rooms = [redis_cluster.room_on(i, "sh") for i in range(3)]
    alice = await clients(a.url, "alice")
    bob = await clients(b.url, "bob")
    for r in rooms:
        await alice.join(r)
        await bob.join(r)
    masters = redis_cluster.masters()
    for i, r in enumerate(rooms):
        channel = "fleetchat:{" + r + "}"
        assert redis_cluster.master_of(channel) is masters[i]
        assert [subscriptions(m, channel) for m in masters] == [(2, 0) if m is masters[i] else (0, 0) for m in masters]
    # the shared channel (revokes, evictions) stays classic: one subscription per instance
    assert sum(subscriptions(m, "fleetchat")[1] for m in masters) == 2


async def test_losing_a_master_refuses_its_rooms_and_spares_the_others(fleet, clients, private_cluster):
    a, b = fleet(2, redis=private_cluster)
    lost, kept = private_cluster.room_on(0, "lost"), private_cluster.room_on(1, "kept")
    alice = await clients(a.url, "alice")
    bob = await clients(b.url, "bob")
    for r in (lost, kept):
        await alice.join(r)
        await bob.join(r)
    assert (await alice.send(lost, "before"))["ok"]
    master = private_cluster.master_of(lost)
    private_cluster.kill(master)
    refused = await alice.send(lost, "during")
    assert refused == {"ok": False, "error": "unavailable", "detail": refused.get("detail")}, refused
    kept_ack = await alice.send(kept, "still here")
    assert kept_ack["ok"], kept_ack
    await async_wait_for(lambda: bob.texts(kept) == ["still here"], what="delivery in the kept room")
    private_cluster.restart(master)
    started = time.monotonic()
    while True:  # a real client retries a refused send with the same client_id
        ack = await alice.send(lost, "after", client_id="after-1")
        if ack.get("ok"):
            break
        assert ack["error"] == "unavailable" and time.monotonic() - started < 30, ack
        await asyncio.sleep(0.2)
    await async_wait_for(lambda: bob.texts(lost) == ["before", "after"], timeout=30, what="delivery after the restart")
    assert "during" not in bob.texts(lost)


async def test_a_failover_to_a_replica_loses_no_acknowledged_message(fleet, clients):
    cluster = RedisCluster(masters=3, replicas=1)
    cluster.start()
    try:
        a, b = fleet(2, redis=cluster)
        r = cluster.room_on(0, "fo")
        sender = await clients(a.url, "sender")
        reader = await clients(b.url, "reader")
        await sender.join(r)
        await reader.join(r)
        acked: list[str] = []
        for n in range(20):
            ack = await sender.send(r, f"m{n:02d}", client_id=f"c{n}")
            assert ack["ok"], ack
            acked.append(f"m{n:02d}")
        await async_wait_for(lambda: reader.texts(r) == acked, what="delivery before the failover")
        master = cluster.master_of(r)
        cluster.kill(master)
        await async_wait_for(lambda: cluster.master_of(r) is not master, timeout=30, what="a replica promoted")
        for n in range(20, 30):
            started = time.monotonic()
            while True:  # refused while the slot has no master: resent with the same client_id
                ack = await sender.send(r, f"m{n:02d}", client_id=f"c{n}")
                if ack.get("ok"):
                    break
                assert ack["error"] == "unavailable" and time.monotonic() - started < 30, ack
                await asyncio.sleep(0.2)
            acked.append(f"m{n:02d}")
        await async_wait_for(lambda: reader.texts(r)[-1:] == acked[-1:], timeout=30, what="delivery after it")
        assert not reader.events["epoch"], "the replica had every acknowledged write: no history lost"
        assert reader.texts(r) == acked, "every acknowledged message delivered once, in order"
        history = await reader.call("history", {"room": r, "limit": 100})
        assert [m["text"] for m in history["messages"]] == acked
    finally:
        cluster.stop()
