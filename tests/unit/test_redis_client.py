"""``backend.redis_client``: one URL, standalone or cluster, told apart by asking the node.

Against real redis-server processes: the session's standalone server and a 3-master
cluster (``tests.support.RedisCluster``)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.exceptions import ConnectionError as RedisConnectionError

from backend import redis_client
from tests.support import RedisCluster, RedisServer, free_port


async def test_a_standalone_server_gets_the_plain_client(redis_server: RedisServer) -> None:
    client = await redis_client.connect(redis_server.url)
    try:
        assert type(client) is Redis
        assert await client.ping()
    finally:
        await client.aclose()


async def test_any_node_of_a_cluster_is_detected_and_routes_every_slot(redis_cluster: RedisCluster) -> None:
    rooms = [redis_cluster.room_on(i) for i in range(3)]
    for node in redis_cluster.masters():
        client = await redis_client.connect(f"redis://127.0.0.1:{node.port}")
        try:
            assert isinstance(client, ClusterClient)
            # one key per master: the client follows the slot map, whichever node the URL named
            for room in rooms:
                await client.set("fc:{" + room + "}:probe", room)
                assert await client.get("fc:{" + room + "}:probe") == room.encode()
        finally:
            await client.aclose()
    ports = {redis_cluster.master_of("{" + room + "}").port for room in rooms}
    assert len(ports) == 3


async def test_the_explicit_scheme_needs_no_probe(redis_cluster: RedisCluster) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    assert redis_client.says_cluster(url) and redis_client.plain_url(url) == redis_cluster.url
    client = await redis_client.connect(url)
    try:
        assert isinstance(client, ClusterClient) and await client.ping()
    finally:
        await client.aclose()


async def test_a_node_that_does_not_answer_is_unavailable_not_standalone() -> None:
    with pytest.raises(RedisConnectionError):
        await redis_client.is_cluster(f"redis://127.0.0.1:{free_port()}", timeout=0.5)


def test_a_killed_master_rejoins_with_its_data(redis_cluster: RedisCluster) -> None:
    """The launcher's fault tools: SIGKILL one master, start it again, the cluster heals."""
    victim = redis_cluster.masters()[1]
    room = redis_cluster.room_on(1)
    key = "fc:{" + room + "}:kept"
    assert redis_cluster.master_of("{" + room + "}").port == victim.port
    assert victim.command("SET", key, "1").startswith(b"+OK")
    redis_cluster.kill(victim)
    assert not victim.alive
    redis_cluster.restart(victim)
    assert victim.command("GET", key) == b"$1\r\n1\r\n"
