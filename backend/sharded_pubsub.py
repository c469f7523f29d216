"""Room channels over a Redis Cluster: sharded pub/sub, one connection per master.

Classic pub/sub in a cluster is broadcast: every node forwards every PUBLISH
to every other node, so the cluster as a whole carries each message to every
node whatever its subscribers. Sharded pub/sub (Redis 7: SSUBSCRIBE,
SPUBLISH) keeps a channel on the master of its hash slot. A room's channel
``fleetchat:{<room>}`` has the room's slot, so the append script publishes it
with SPUBLISH atomically with the store (``backend.store.redis``), and only
the master that holds the room carries its messages.

``ShardedSubscriber`` holds one plain connection per master that has a
channel this instance wants, and SSUBSCRIBEs each channel there, one command
per slot (Redis refuses a SSUBSCRIBE across slots). Every connection's
messages, confirmations and failures go to one queue that
``FleetManager._listen`` reads. The fleet's shared channel (revokes,
evictions, remote disconnects) stays classic: it is rare, and it must reach
every instance.

When a master fails or a slot moves, its channels are taken again from the
slot map as it is now (a replica promoted in its place, or the slot's new
owner), retried every ``retry`` seconds while that fails, and ``rehomed``
is queued so the relay sweeps the store for what was published meanwhile.
Channels on the other masters are untouched. redis-py 8.1's ``ClusterPubSub``
does much of this too, but reads its nodes by polling them in turn; here each
master's connection has a reader of its own, so a message waits for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend.redis_client import slot_of

log = logging.getLogger(__name__)

Event = tuple[str, str, Any]
"""(kind, channel, data): ``message``, ``subscribe``, ``unsubscribe``, ``rehomed`` or ``error``."""

_KINDS = {
    b"message": "message",
    b"smessage": "message",
    b"subscribe": "subscribe",
    b"ssubscribe": "subscribe",
    b"unsubscribe": "unsubscribe",
    b"sunsubscribe": "unsubscribe",
}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ShardedSubscriber:
    def __init__(self, cluster: RedisCluster, shared: str, options: dict[str, Any], retry: float = 1.0) -> None:
        self.cluster = cluster
        self.shared = shared
        self.retry = retry
        # A subscriber waits as long as it must. It does not retry: a lost link must reach
        # the reader (``_node_lost``: its channels taken again, then ``rehomed``, so the relay
        # sweeps the store for what was published meanwhile). redis-py's own reconnect would
        # re-SSUBSCRIBE the node's channels in one command, which Redis refuses across
        # slots, and within one slot would say nothing of the messages lost in between.
        self._options = {**options, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)}
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._pubsubs: dict[str, Any] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}
        self._where: dict[str, str] = {}
        """Channel -> the node it is subscribed on."""
        self._leaving: set[str] = set()
        self._homeless: set[str] = set()
        """Channels whose master cannot be reached now: retried."""
        self._shared_node: str | None = None
        self._retrying: asyncio.Task[None] | None = None
        self._closed = False

    # -- what RoomChannels calls ------------------------------------------------------

    async def subscribe(self, *channels: str) -> None:
        groups: dict[tuple[str, int], list[str]] = defaultdict(list)
        nodes: dict[str, ClusterNode] = {}
        for channel in channels:
            self._homeless.discard(channel)
            node = self.cluster.get_node_from_key(channel)
            if node is None:
                self._homeless.add(channel)
                continue
            nodes[node.name] = node
            groups[(node.name, slot_of(channel))].append(channel)
        for (name, _), group in groups.items():
            try:
                await self._pubsub(nodes[name]).ssubscribe(*group)
                self._reading(name)
            except Exception as exc:
                log.warning("sharded pub/sub: cannot subscribe on %s yet (%s)", name, exc)
                self._forget_node(name)
                self._homeless.update(group)
                continue
            for channel in group:
                self._where[channel] = name
        if self._homeless:
            self._retry_soon()

    async def unsubscribe(self, *channels: str) -> None:
        groups: dict[tuple[str, int], list[str]] = defaultdict(list)
        for channel in channels:
            self._homeless.discard(channel)
            name = self._where.pop(channel, None)
            if name is not None and name in self._pubsubs:
                groups[(name, slot_of(channel))].append(channel)
        for (name, _), group in groups.items():
            self._leaving.update(group)
            try:
                await self._pubsubs[name].sunsubscribe(*group)
            except Exception as exc:  # the node's reader notices, and its channels are taken again
                log.warning("sharded pub/sub: cannot unsubscribe on %s (%s)", name, exc)

    # -- the connections -------------------------------------------------------------------

    async def start(self, channels: list[str]) -> None:
        """Subscribe to the shared channel (classic, on any master) and ``channels``."""
        await self._subscribe_shared()
        await self.subscribe(*channels)

    async def _subscribe_shared(self) -> None:
        for node in self.cluster.get_primaries():
            try:
                await self._pubsub(node).subscribe(self.shared)
                self._reading(node.name)
            except Exception as exc:
                log.warning("sharded pub/sub: shared channel not on %s (%s)", node.name, exc)
                self._forget_node(node.name)
                continue
            self._shared_node = node.name
            return
        raise ConnectionError("no master of the cluster answers")

    def _pubsub(self, node: ClusterNode) -> Any:
        pubsub = self._pubsubs.get(node.name)
        if pubsub is None:
            client = aioredis.Redis(host=node.host, port=node.port, **self._options)
            pubsub = self._pubsubs[node.name] = client.pubsub()
        return pubsub

    def _reading(self, name: str) -> None:
        """A node's connection has a reader once a first (s)subscribe was sent on it."""
        if name not in self._readers and name in self._pubsubs:
            self._readers[name] = asyncio.get_running_loop().create_task(self._read(name, self._pubsubs[name]))

    async def _read(self, name: str, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = _KINDS.get(message["type"] if isinstance(message["type"], bytes) else message["type"].encode())
                if kind is None:
                    continue
                channel = _text(message["channel"])
                if kind == "message":
                    self.events.put_nowait(("message", channel, message["data"]))
                elif kind == "subscribe":
                    self.events.put_nowait(("subscribe", channel, None))
                elif channel in self._leaving:
                    self._leaving.discard(channel)
                    self.events.put_nowait(("unsubscribe", channel, None))
                elif channel in self._where:
                    # the server dropped it (its slot moved): take it again where it lives now
                    self._where.pop(channel, None)
                    self.events.put_nowait(("unsubscribe", channel, None))
                    self._homeless.add(channel)
                    self._retry_soon(at_once=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._closed:
                return
            log.warning("sharded pub/sub: lost %s (%s); taking its channels again", name, exc)
            self._node_lost(name)

    def _forget_node(self, name: str) -> None:
        pubsub = self._pubsubs.pop(name, None)
        reader = self._readers.pop(name, None)
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if pubsub is not None:
            task = asyncio.get_running_loop().create_task(pubsub.aclose())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _node_lost(self, name: str) -> None:
        self._forget_node(name)
        lost = [channel for channel, where in self._where.items() if where == name]
        for channel in lost:
            del self._where[channel]
            self.events.put_nowait(("unsubscribe", channel, None))
        self._homeless.update(lost)
        if self._shared_node == name:
            self._shared_node = None
        self._retry_soon(at_once=True)

    # -- taking channels again ----------------------------------------------------------------

    def _retry_soon(self, at_once: bool = False) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._rehome(0.0 if at_once else self.retry))

    async def _rehome(self, wait: float) -> None:
        while not self._closed and (self._homeless or self._shared_node is None):
            await asyncio.sleep(wait)
            wait = self.retry
            try:
                await self.cluster.nodes_manager.initialize()  # the slot map as it is now
            except Exception as exc:
                log.warning("sharded pub/sub: slot map not readable yet (%s)", exc)
                continue
            if self._shared_node is None:
                try:
                    await self._subscribe_shared()
                except Exception as exc:
                    log.warning("sharded pub/sub: shared channel not taken yet (%s)", exc)
                    continue
            homeless, self._homeless = sorted(self._homeless), set()
            await self.subscribe(*homeless)
            if not self._homeless:
                self.events.put_nowait(("rehomed", "", None))

    async def close(self) -> None:
        self._closed = True
        if self._retrying is not None:
            self._retrying.cancel()
        for reader in self._readers.values():
            reader.cancel()
        for pubsub in self._pubsubs.values():
            try:
                await pubsub.aclose()
            except Exception:  # closing a connection to a node that is gone
                pass
        self._pubsubs.clear()
        self._readers.clear()
