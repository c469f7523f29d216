"""Rate limiting: token buckets (refill ``rate``/s up to ``burst``) per
connection and per user, and new connections per minute per client address.

Messages per user are limited fleet-wide inside the Redis append script
(``store/redis.py``: no extra round trip); the buckets here are the cheap
local pre-check every send passes first, and the whole limit in embedded mode.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self, now: float | None = None) -> bool:
        """Spend one token if there is one; False means the caller is over its rate."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0 - 1e-9:  # float dust: 0.1 s at 10/s is a whole token
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def retry_after(self) -> float:
        """Seconds until the next token."""
        return max(0.0, (1.0 - self._tokens) / self._rate)


class KeyedBuckets:
    """One ``TokenBucket`` per key (a user, an address), least recently used
    dropped first so a flood of new keys cannot grow memory without bound."""

    def __init__(self, rate: float, burst: int, size: int = 100_000) -> None:
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._rate, self._burst, self._size = rate, burst, size

    def take(self, key: str) -> bool:
        bucket = self._buckets.pop(key, None) or TokenBucket(self._rate, self._burst)
        self._buckets[key] = bucket
        if len(self._buckets) > self._size:
            self._buckets.popitem(last=False)
        return bucket.take()


class ConnectLimiter:
    """New connections per client address per minute: a fixed one-minute window,
    counted in Redis across the fleet when ``redis_of()`` gives a client (the
    store's, once open), in memory otherwise.

    It fails open: while Redis is down a connection is admitted (its sends are
    refused with ``unavailable`` anyway), rather than locking everyone out."""

    def __init__(self, per_minute: int, redis_of: Callable[[], aioredis.Redis | None] = lambda: None) -> None:
        self.per_minute = per_minute
        self._redis_of = redis_of
        self._window = -1
        self._counts: dict[str, int] = {}

    async def allow(self, address: str) -> bool:
        if self.per_minute <= 0:
            return True
        window = int(time.time() // 60)
        redis = self._redis_of()
        if redis is not None:
            key = f"fc:connects:{address}:{window}"
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, 61)
                    count, _ = await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("connection rate check failed open: %s", exc)
                return True
            return int(count) <= self.per_minute
        if window != self._window:
            self._window, self._counts = window, {}
        count = self._counts.get(address, 0) + 1
        self._counts[address] = count
        return count <= self.per_minute


def client_address(peer: str | None, forwarded_for: str | None, trusted: frozenset[str]) -> str:
    """The client's address: the TCP peer, or, when the peer is a trusted proxy,
    the nearest untrusted hop of X-Forwarded-For (clients can prepend anything)."""
    address = peer or "unknown"
    if address in trusted and forwarded_for:
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if hop and hop not in trusted:
                return hop[:64]
    return address
