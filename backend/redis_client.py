"""The one place that turns ``REDIS_URL`` into a redis-py client.

``REDIS_URL`` may point at a standalone Redis or at any node of a Redis Cluster. As
Centrifugo does, the node is asked (``INFO cluster`` says ``cluster_enabled:1``), so
the same URL works for both; ``redis+cluster://`` (``rediss+cluster://``) says "cluster"
without asking. The answer picks ``redis.asyncio.RedisCluster`` (which follows MOVED
and ASK and routes each command, script and sharded channel to its slot's master) or
``redis.asyncio.Redis``. Every client is built with the options redis-py 7 had as
defaults where 8 changed them (see ``BASE_OPTIONS``), so the replies and the failure
behaviour the store relies on do not change with the library.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import time
from binascii import crc_hqx
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

log = logging.getLogger(__name__)

AnyRedis = aioredis.Redis | RedisCluster
"""What the factory returns: both speak the same commands for single-slot work."""
REDIS_FAILURES = (RedisError, RedisClusterException, OSError)
"""What a Redis call raises when Redis is away. A cluster client's ``SlotNotCoveredError``
(its slot map lacking a dead master's slots, while it reloads it) is a
``RedisClusterException``, which is not a ``RedisError``: callers catch this tuple."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Explicit cluster URL schemes, and the scheme redis-py reads once the marker is gone."""

MAX_CONNECTIONS = 10_000
"""Per pool (per node in a cluster). redis-py 8 caps a pool at 100 and then refuses the
next concurrent command ("Too many connections"); 7 had no cap. 10,000 is Redis's own
default ``maxclients``: in effect no client-side cap, concurrency is bounded by the
chat's own limits."""

POOL_SIZE = 32
"""Connections the store's standalone client keeps at most. Under a burst, an unbounded
pool opens a connection per waiting command, and opening one costs more than the
command: measured, 900 connections and 16 appends done in 3 s, against thousands a
second with the pool bounded."""
POOL_WAIT = 2.0
"""Seconds a command waits for a free pooled connection before the caller answers ``unavailable``."""

BASE_OPTIONS: dict[str, Any] = {"protocol": 2, "max_connections": MAX_CONNECTIONS}
"""``protocol=2``: RESP2, the replies redis-py 7 read (8 defaults to RESP3, which changes
how a Lua script's booleans come back and turns pub/sub messages into push frames)."""

_detected: dict[str, bool] = {}


def plain_url(url: str) -> str:
    """``url`` without the ``+cluster`` marker: what redis-py (and python-socketio) parse."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme)) if scheme else url


def says_cluster(url: str) -> bool:
    """The URL itself names a cluster (``redis+cluster://``)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


async def is_cluster(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` is a Redis Cluster node: the scheme says so, or the node does.

    The node's answer is remembered per URL (it cannot change while it runs); a node
    that does not answer raises redis-py's ``ConnectionError``/``TimeoutError``, which
    callers already treat as "Redis unavailable"."""
    if says_cluster(url):
        return True
    if url in _detected:
        return _detected[url]
    probe = aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        protocol=2,
        single_connection_client=True,
    )
    try:
        info = await probe.info("cluster")
    finally:
        await probe.aclose()
    _detected[url] = int(info.get("cluster_enabled", 0)) == 1
    return _detected[url]


CLOSED_WRITER_RACE = "8.1.0"
"""The redis-py whose asyncio connection, closed under a command being written, raises
``AttributeError: 'NoneType' object has no attribute 'writelines'`` instead of its
``ConnectionError`` (redis-py issues 3546 and 4287, fixed upstream after 8.1.0). The
cluster client disconnects a node's connections when it reloads its slot map after a
master died, while other commands still write on them: a send to a room on a live
master then failed as an internal error, where a ``ConnectionError`` is retried on
the new slot map. ``ClosedWriterSafeConnection`` is for this exact version only."""


class ClosedWriterSafeConnection(aioredis.Connection):
    """redis-py's connection, with a write that finds its writer gone raising
    ``ConnectionError`` (what the cluster client retries), as later redis-py does."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except AttributeError as exc:
            if exc.obj is not None or exc.name not in ("writelines", "write", "drain"):
                raise  # not the closed-writer race: a real bug shows as itself
            raise RedisConnectionError("the connection was closed while a command was written") from exc


_guard_warned: set[str] = set()
"""redis-py versions the closed-writer guard has warned about (once each)."""


def closed_writer_guard() -> type[aioredis.Connection] | None:
    """The connection class for cluster nodes: the guarded one on the redis-py it is
    written for; on any other, None and one WARNING (the library's own class runs)."""
    found = importlib.metadata.version("redis")
    if found == CLOSED_WRITER_RACE:
        return ClosedWriterSafeConnection
    if found not in _guard_warned:
        _guard_warned.add(found)
        log.warning(
            "redis-py %s installed: the closed-writer guard is written for %s and is not applied",
            found,
            CLOSED_WRITER_RACE,
        )
    return None


def make_client(url: str, cluster: bool, **options: Any) -> AnyRedis:
    """A client for ``url`` of the kind ``cluster`` names, with ``BASE_OPTIONS`` under ``options``."""
    options = {**BASE_OPTIONS, **options}
    if cluster:
        # A cluster has database 0 only; redis-py refuses any other in the URL. Its
        # per-node pools refuse past max_connections rather than wait, so they keep the high cap.
        client = RedisCluster.from_url(plain_url(url), **options)
        guarded = closed_writer_guard()
        if guarded is not None:
            # The async cluster client takes no connection class (it hard-codes its own):
            # every node it creates, now and after each slot-map reload, takes it from here.
            client.nodes_manager.connection_kwargs["connection_class"] = guarded
            for node in client.nodes_manager.startup_nodes.values():
                node.connection_class = guarded
        return client
    # A blocking pool: a command beyond max_connections waits for a free connection
    # (up to POOL_WAIT, then "unavailable") instead of opening one more (see POOL_SIZE).
    pool = aioredis.BlockingConnectionPool.from_url(url, timeout=POOL_WAIT, **options)
    return aioredis.Redis.from_pool(pool)  # owns the pool: closing the client closes its connections


async def connect(url: str, **options: Any) -> AnyRedis:
    """``make_client`` after asking ``url`` which kind it is (``is_cluster``), ready to use."""
    return await ready(make_client(url, await is_cluster(url), **options))


async def ready(client: AnyRedis) -> AnyRedis:
    """A cluster client that has read the slot map. redis-py 8.1's async cluster client
    loads it on first use, and commands sent concurrently while it does can find their
    connection closed under them (``'NoneType' object has no attribute 'writelines'``):
    loading it once, before any command, avoids that race."""
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client


SLOTS = 16384
"""Redis Cluster's hash slots."""


def slot_of(key: str) -> int:
    """The hash slot of ``key`` (its ``{tag}`` if it has one), as Redis Cluster computes it."""
    raw = key.encode()
    start = raw.find(b"{")
    if start > -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc_hqx(raw, 0) % SLOTS


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """For each hash slot, a short tag (``p<n>``) that hashes to it: ``"{" + tag + "}"``
    puts a key in a chosen slot, so a per-slot partition key can share a room's slot
    (and a script can write both atomically). Computed once (about 150,000 CRC16s)."""
    tags: list[str | None] = [None] * SLOTS
    left, n = SLOTS, 0
    while left:
        slot = crc_hqx(b"p%d" % n, 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = f"p{n}"
            left -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


def partition_key(name: str, key: str) -> str:
    """``fc:{<tag of key's slot>}:<name>``: the per-slot partition ``name`` that ``key`` writes to."""
    return "fc:{" + slot_tags()[slot_of(key)] + "}:" + name


def all_partition_keys(name: str) -> list[str]:
    """Every slot's partition ``name``: what a consumer of all of them scans."""
    return ["fc:{" + tag + "}:" + name for tag in slot_tags()]


class Partitions:
    """The per-slot partitions ``name`` (streams) that exist, found by asking for all of
    them (one pipelined EXISTS per slot, about 16,000 commands) at most every ``every``
    seconds. A partition never goes away once written (trimming leaves the key), so what
    was found stays found; a new one is seen within ``every`` seconds. On a standalone
    Redis there is one stream, ``single``, and nothing to find."""

    def __init__(self, name: str, single: str, every: float = 5.0) -> None:
        self.name = name
        self.single = single
        self.every = every
        self._known: list[str] = []
        self._scanned = -1e9

    async def streams(self, redis: AnyRedis, fresh: bool = False) -> list[str]:
        """The streams to read: ``[single]``, or every partition found so far (rescanned if due)."""
        if not isinstance(redis, RedisCluster):
            return [self.single]
        now = time.monotonic()
        if fresh or now - self._scanned >= self.every:
            keys = all_partition_keys(self.name)
            async with redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(key)
                found = await pipe.execute()
            known = set(self._known)
            self._known += [k for k, there in zip(keys, found, strict=True) if there and k not in known]
            self._scanned = now
        return list(self._known)
