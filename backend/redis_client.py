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

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

AnyRedis = aioredis.Redis | RedisCluster
"""What the factory returns: both speak the same commands for single-slot work."""

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""Explicit cluster URL schemes, and the scheme redis-py reads once the marker is gone."""

MAX_CONNECTIONS = 10_000
"""Per pool (per node in a cluster). redis-py 8 caps a pool at 100 and then refuses the
next concurrent command ("Too many connections"); 7 had no cap. 10,000 is Redis's own
default ``maxclients``: in effect no client-side cap, concurrency is bounded by the
chat's own limits."""

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


def make_client(url: str, cluster: bool, **options: Any) -> AnyRedis:
    """A client for ``url`` of the kind ``cluster`` names, with ``BASE_OPTIONS`` under ``options``."""
    options = {**BASE_OPTIONS, **options}
    if cluster:
        # A cluster has database 0 only; redis-py refuses any other in the URL.
        return RedisCluster.from_url(plain_url(url), **options)
    return aioredis.Redis.from_url(url, **options)


async def connect(url: str, **options: Any) -> AnyRedis:
    """``make_client`` after asking ``url`` which kind it is (``is_cluster``)."""
    return make_client(url, await is_cluster(url), **options)
