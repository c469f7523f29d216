"""The Redis pub/sub listener: back within seconds of Redis returning, and say so.

python-socketio's ``AsyncRedisManager`` backs off up to 60 s between
reconnects and tells nobody when it has subscribed again, while whatever was
published meanwhile is lost to pub/sub. ``FleetManager`` (``backend.fanout``,
a subclass of the manager) overrides ``_redis_listen_with_retries``, a private
method of python-socketio 5.18, with ``listen_with_retries``: retries capped at
``max_retry_sleep`` (2 s) and ``on_resubscribe`` after each subscription, so
the relay sweeps the store at once and ``fleetchat_pubsub_reconnects_total``
counts it. Not applied: the stock listener runs (the relay's 1 s sweep still
fills the gap, later).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from backend.accel.base import Cut


async def listen_with_retries(manager: Any) -> AsyncIterator[Any]:
    """python-socketio 5.18's ``AsyncRedisManager._redis_listen_with_retries``, with a short backoff."""
    retry_sleep = 0.1
    while True:
        try:
            manager._redis_connect()
            await manager.pubsub.subscribe(manager.channel)
            retry_sleep = 0.1
            if manager.on_resubscribe is not None:
                manager.on_resubscribe()
            async for message in manager.pubsub.listen():
                yield message
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            manager._get_logger().warning("pub/sub listener lost Redis (%s); retrying in %.1fs", exc, retry_sleep)
            await asyncio.sleep(retry_sleep)
            retry_sleep = min(retry_sleep * 2, manager.max_retry_sleep)


CUT = Cut(
    name="listener",
    library="python-socketio",
    requires={"python-socketio": "5.18.1"},
    buys="pub/sub back within 2 s of Redis returning (stock: up to 60 s), and a sweep at once",
)
