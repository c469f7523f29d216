"""``backend.redis_client``: one URL, standalone or cluster, told apart by asking the node.

Against real redis-server processes: the session's standalone server and a 3-master
cluster (``tests.support.RedisCluster``)."""

from __future__ import annotations

import importlib.metadata

import pytest
from redis.asyncio import Connection, Redis
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


def test_the_closed_writer_guard_is_written_for_the_pinned_redis_py() -> None:
    # Fails when redis-py moves: check whether the new version still raises AttributeError
    # on a write whose connection was closed under it (upstream fixed it after 8.1.0),
    # then move CLOSED_WRITER_RACE or drop the guard.
    assert importlib.metadata.version("redis") == redis_client.CLOSED_WRITER_RACE
    assert redis_client.closed_writer_guard() is redis_client.ClosedWriterSafeConnection


async def test_a_write_on_a_connection_closed_under_it_is_a_connection_error(redis_server: RedisServer) -> None:
    stock = Connection(host="127.0.0.1", port=redis_server.port, protocol=2)
    guarded = redis_client.ClosedWriterSafeConnection(host="127.0.0.1", port=redis_server.port, protocol=2)
    closed = []
    for conn in (stock, guarded):
        await conn.connect()

        async def closed_meanwhile(conn: Connection = conn) -> None:
            # the slot-map reload's disconnect() runs while this command awaits its health check
            closed.append(conn._writer)
            conn._writer.close()
            conn._writer = None

        conn.check_health = closed_meanwhile  # type: ignore[method-assign]
    with pytest.raises(AttributeError, match="writelines"):
        await stock.send_command("PING")  # the race, as redis-py 8.1 lets it out
    with pytest.raises(RedisConnectionError):
        await guarded.send_command("PING")
    for conn, writer in zip((stock, guarded), closed, strict=True):
        await writer.wait_closed()
        await conn.disconnect()


async def test_every_node_of_a_cluster_client_writes_through_the_guard(redis_cluster: RedisCluster) -> None:
    client = await redis_client.connect(redis_cluster.url)
    try:
        nodes = client.get_nodes()
        assert len(nodes) == 3
        assert {node.connection_class for node in nodes} == {redis_client.ClosedWriterSafeConnection}
        await client.set("fc:{guard}:probe", "1")
        node = client.get_node_from_key("fc:{guard}:probe")
        assert all(type(conn) is redis_client.ClosedWriterSafeConnection for conn in node._connections)
    finally:
        await client.aclose()
