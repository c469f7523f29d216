"""Fan-out to this instance's sockets, and the two Socket.IO managers.

``Fanout`` is the hot path of every delivery: each message is encoded once,
and the frames of a tick are written once per recipient, with no task or
await per recipient (python-socketio's generic ``emit`` spawns a task per
recipient and hypercorn adds a dozen calls per frame). Its direct
writes are the accel cut ``direct_transport`` (backend/accel/); without it the
frames go through engine.io's socket queue.

Chat ``message`` events, whichever way they arrive, go through the ``Relay``
so each socket sees every message once and in ``seq`` order. Everything else
(presence, typing, notifications) uses python-socketio's emit unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from backend import redis_client
from backend.accel.direct_transport import transport_of
from backend.accel.lean_websocket import text_frame
from backend.relay import Relay
from backend.room_channels import RoomChannels
from backend.sharded_pubsub import ShardedSubscriber

REVOKE_EVENT = "fc:revoke"
"""Published to every instance when a session ends: never delivered to a client."""
EVICT_EVENT = "fc:evict"
"""Published when a user is removed from a private room: each instance's sockets of theirs leave it."""
REVOKE_ROOM = "fc:revoke"
"""A room no socket joins, so the publishing instance delivers the event to nobody."""

NAMESPACE = "/"
CALLBACK_PREFIX = b'{"method":"callback"'
"""How python-socketio's pub/sub ``callback`` message begins (orjson keeps its key order)."""
PUBLISH_TIMEOUT = 2.0
"""Seconds a publish over a cluster waits for its master (the subscribers wait forever)."""
SHARED_CHANNEL = "fleetchat"
"""python-socketio's one pub/sub channel, for what has no room channel (``backend.room_channels``)."""


class Fanout:
    """Events to this instance's sockets in a room: encode once, write once.

    An event is encoded to its Socket.IO text once, and events are flushed
    in batches: every event for a room in a batch becomes one byte string of
    WebSocket frames, written with a single ``transport.write`` per recipient
    (a recipient named as ``skip_sid``, the typist of a typing event, gets the
    same frames without that one). A batch is flushed at the end of the
    event-loop tick it began in, unless the last flush was less than
    ``linger`` seconds ago: then at ``linger`` after it. An instance at rest
    so delivers at once, and a busy one flushes at most once per ``linger``,
    each recipient's frames of that time in one write (one system call, one
    TCP segment, one wakeup of its client) instead of one per message.
    Sockets that cannot be written directly (long-polling, another ASGI
    server) get the same packets through engine.io's queue. A recipient whose unsent buffer passes
    ``max_buffer`` is too slow to keep up and is cut off instead of growing
    memory without bound. ``on_flush`` learns, once per flush, how many chat
    messages were delivered.
    """

    def __init__(
        self,
        server: socketio.AsyncServer,
        on_flush: Callable[[int], None],
        max_buffer: int = 4 << 20,
        linger: float = 0.0,
    ) -> None:
        self._server = server
        self._on_flush = on_flush
        self._max_buffer = max_buffer
        self._linger = linger
        self._pending: dict[str, list[tuple[str, str | None, bool]]] = {}
        self._scheduled: asyncio.Handle | None = None
        self._last_flush = -linger
        self.slow_consumers_dropped = 0

    def emit(self, room: str, event: str, data: Any, skip_sid: str | None = None) -> None:
        # binary=False: the events fanned out are JSON (orjson would refuse bytes), so
        # python-socketio need not walk the whole payload looking for attachments,
        # which cost more than encoding it (a presence list of 200 members, for one)
        packet = self._server.packet_class(sio_packet.EVENT, namespace=NAMESPACE, data=[event, data], binary=False)
        encoded = packet.encode()
        entry = (encoded, skip_sid, event == "message")
        entries = self._pending.get(room)
        if entries is None:
            self._pending[room] = [entry]
        else:
            entries.append(entry)
        if self._scheduled is None:
            loop = asyncio.get_running_loop()
            wait = self._last_flush + self._linger - loop.time()
            self._scheduled = loop.call_later(wait, self.flush) if wait > 0 else loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every pending event now (also called before a socket joins a room: what was
        queued for the room is in the history the join returns)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        if not self._pending:
            return
        self._last_flush = asyncio.get_running_loop().time()
        pending, self._pending = self._pending, {}
        sockets = self._server.eio.sockets
        delivered = 0
        for room, entries in pending.items():
            frames = [text_frame(("4" + text).encode()) for text, _, _ in entries]
            shared = b"".join(frames)
            messages = sum(1 for _, _, is_message in entries if is_message)
            skips = {skip for _, skip, _ in entries if skip is not None}
            for sid, eio_sid in self._server.manager.get_participants(NAMESPACE, room):
                sock = sockets.get(eio_sid)
                if sock is None or sock.closed:
                    continue
                mine = [i for i, entry in enumerate(entries) if entry[1] != sid] if sid in skips else None
                transport = transport_of(sock)
                if transport is not None:
                    if transport.get_write_buffer_size() > self._max_buffer:
                        self.slow_consumers_dropped += 1
                        transport.abort()
                        continue
                    transport.write(shared if mine is None else b"".join(frames[i] for i in mine))
                else:
                    for i in range(len(entries)) if mine is None else mine:
                        sock.queue.put_nowait(eio_packet.Packet(eio_packet.MESSAGE, entries[i][0]))
                delivered += messages if mine is None else sum(1 for i in mine if entries[i][2])
        self._on_flush(delivered)


class RelayHook:
    """Where the managers hand chat messages to the relay, and room events to
    the fan-out (both set after construction)."""

    relay: Relay | None = None
    updates: Relay | None = None
    fanout: Fanout | None = None

    def fan_out(self, event: str, data: Any, namespace: str | None, room: Any, skip_sid: Any, callback: Any) -> bool:
        """Send a plain room event (presence, typing, notifications) through the
        encode-once fan-out; False for what it does not cover (acks, several
        rooms or skipped sids, another namespace, a broadcast to everyone)."""
        if (
            self.fanout is None
            or callback is not None
            or not isinstance(room, str)
            or (namespace or NAMESPACE) != NAMESPACE
            or not (skip_sid is None or isinstance(skip_sid, str))
        ):
            return False
        self.fanout.emit(room, event, data, skip_sid)
        return True

    def relay_message(self, data: Any) -> bool:
        if self.relay is None or not isinstance(data, dict) or "seq" not in data:
            return False
        self.relay.accept(data)
        return True

    def relay_update(self, data: Any) -> bool:
        if self.updates is None or not isinstance(data, dict) or "rev" not in data:
            return False
        self.updates.accept(data)
        return True

    def hold(self, room: str) -> None:
        """A listener that is not a Socket.IO socket (the ``/ws`` bridge) arrived in ``room``."""

    def release(self, room: str) -> None:
        """That listener left."""

    async def ready(self, room: str) -> None:
        """Returns once events published to ``room`` reach this instance (at once in one process)."""

    def route_to_relay(self, event: Any, data: Any) -> bool:
        """Chat messages and updates go through their relays (ordered, exactly once)."""
        if event == "message":
            return self.relay_message(data)
        return event == "update" and self.relay_update(data)


class LocalManager(RelayHook, socketio.AsyncManager):
    """Embedded mode: one process, in-memory rooms."""

    async def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None, to=None, **kw):  # type: ignore[no-untyped-def,override]
        if self.route_to_relay(event, data):
            return
        if self.fan_out(event, data, namespace, to or room, skip_sid, callback):
            return
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kw)


class FleetManager(RelayHook, socketio.AsyncRedisManager):
    """Fleet mode: python-socketio's Redis pub/sub, routed per room, with chat
    messages going through the relay both for local sends and for what other
    instances publish.

    A room's events travel on the room's own channel (``backend.room_channels``),
    which this instance subscribes to only while it has a listener in the room;
    what has no single room (a broadcast, a session revoke, a remote sid's
    disconnect, a callback) stays on python-socketio's shared ``channel``.
    ``_publish`` and ``_listen`` are the pub/sub manager's documented subclass
    hooks; the listener is fleetchat's own (it replaces python-socketio's
    one-channel listener and its backoff of up to 60 s).
    """

    on_resubscribe: Callable[[], None] | None = None
    """Called each time the listener (re)subscribes: whatever was published
    meanwhile is lost to pub/sub, so the relay sweeps the store at once."""
    max_retry_sleep = 2.0
    on_received: Callable[[], None] | None = None
    """Counts every message the listener receives (``fleetchat_pubsub_received_total``)."""
    on_arrival: Callable[[dict[str, Any]], None] | None = None
    """Sees each chat message another instance published, as it arrives (``fleetchat_pubsub_lag_seconds``)."""

    def __init__(self, *args: Any, linger: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routes = RoomChannels(self.channel, linger)

    def room_channel(self, room: str) -> str:
        """Where events to ``room`` are published (the append script publishes there too)."""
        return self.routes.channel(room)

    # -- who listens where ----------------------------------------------------------

    def _in_routed_room(self, sid: str, namespace: str, room: Any) -> bool:
        """``sid`` is a listener of ``room`` and the room has a channel (not its own sid room)."""
        return room != sid and self.routes.routed(room) and sid in self.rooms.get(namespace, {}).get(room, ())

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):  # type: ignore[no-untyped-def]
        was = self._in_routed_room(sid, namespace, room)
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if not was and self._in_routed_room(sid, namespace, room):
            self.routes.add(room)

    def basic_leave_room(self, sid, namespace, room):  # type: ignore[no-untyped-def]
        was = self._in_routed_room(sid, namespace, room)
        super().basic_leave_room(sid, namespace, room)
        if was:
            self.routes.remove(room)

    def hold(self, room: str) -> None:
        self.routes.add(room)

    def release(self, room: str) -> None:
        self.routes.remove(room)

    async def ready(self, room: str) -> None:
        await self.routes.ready(room)

    # -- publishing --------------------------------------------------------------------

    def channel_for(self, data: dict[str, Any]) -> str | None:
        """The channel of a pub/sub message: its room's, the shared one, or None for an
        emit to one of this instance's own sids (nobody else can deliver it)."""
        room = data.get("room")
        if data.get("method") != "emit" or not isinstance(room, str):
            return self.channel
        if self.is_sid_room(data.get("namespace") or NAMESPACE, room):
            return None
        return self.routes.channel(room) if self.routes.routed(room) else self.channel

    async def _publish(self, data):  # type: ignore[no-untyped-def]
        channel = self.channel_for(data)
        if channel is None:
            return None
        payload = self.json.dumps(data)
        for retries_left in (1, 0):
            try:
                if await self._in_cluster():
                    client = await self._cluster_client()
                    if channel == self.channel:
                        return await client.publish(channel, payload)
                    return await client.spublish(channel, payload)  # the room's slot's master
                if not self.connected:
                    self._redis_connect()
                return await self.redis.publish(channel, payload)
            except Exception as exc:
                self.connected = False
                if not retries_left:
                    self._get_logger().error("cannot publish to Redis, giving up: %s", exc)
        return None

    # -- the Redis it talks to ----------------------------------------------------------

    _cluster: bool | None = None
    _cluster_redis: Any = None

    async def _in_cluster(self) -> bool:
        """Whether ``url`` names a Redis Cluster node (asked once: ``backend.redis_client``)."""
        if self._cluster is None:
            self._cluster = await redis_client.is_cluster(self.redis_url)
        return self._cluster

    async def _cluster_client(self) -> Any:
        """The cluster client publishes go through (it routes SPUBLISH to the slot's master)."""
        if self._cluster_redis is None:
            options = {k: v for k, v in self.redis_options.items() if k != "health_check_interval"}
            options["socket_timeout"] = PUBLISH_TIMEOUT
            self._cluster_redis = await redis_client.connect(self.redis_url, **options)
        return self._cluster_redis

    async def ping(self) -> bool:
        """The pub/sub Redis answers (``/readyz``): every master, in a cluster."""
        if await self._in_cluster():
            return bool(await (await self._cluster_client()).ping())
        if not self.connected or self.redis is None:
            self._redis_connect()
        return bool(await self.redis.ping())

    def _redis_connect(self) -> None:
        super()._redis_connect()
        # subscribe confirmations are wanted: they say when a room's channel is live
        self.pubsub = self.redis.pubsub()

    # -- listening ---------------------------------------------------------------------

    async def _listen(self):  # type: ignore[no-untyped-def]
        """Every message on the shared channel and the rooms' channels; back within
        ``max_retry_sleep`` of Redis returning, with a sweep once subscribed."""
        # What this instance published comes back to it (pub/sub has no "not to
        # myself"); it was delivered here already. Skip it before decoding, by its
        # host_id, which a JSON string inside the message cannot spell (its quotes
        # would be escaped); a callback names its target host there, so it stays.
        own = b'"host_id":"' + self.host_id.encode() + b'"'
        retry_sleep = 0.1
        while True:
            try:
                events = self._sharded_events() if await self._in_cluster() else self._plain_events()
                async for kind, channel, data in events:
                    if kind == "message":
                        if self.on_received is not None:
                            self.on_received()
                        if own in data and not data.startswith(CALLBACK_PREFIX):
                            continue
                        yield data
                    elif kind == "subscribe":
                        if channel == self.channel:
                            retry_sleep = 0.1
                            if self.on_resubscribe is not None:
                                self.on_resubscribe()
                        else:
                            self.routes.confirmed(channel)
                    elif kind == "unsubscribe":
                        self.routes.unconfirmed(channel)
                    elif kind == "rehomed" and self.on_resubscribe is not None:
                        self.on_resubscribe()  # channels of a failed master are back: sweep
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.routes.detach()
                self._get_logger().warning("pub/sub listener lost Redis (%s); retrying in %.1fs", exc, retry_sleep)
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, self.max_retry_sleep)

    async def _plain_events(self) -> AsyncIterator[tuple[str, str, Any]]:
        """A standalone Redis: one connection, classic SUBSCRIBE for every channel."""
        self._redis_connect()
        pubsub = self.pubsub
        wanted = [self.channel, *self.routes.wanted()]
        self.routes.attach(pubsub)
        for start in range(0, len(wanted), 1000):
            await pubsub.subscribe(*wanted[start : start + 1000])
        async for message in pubsub.listen():
            kind = message["type"]
            if kind in ("message", "subscribe", "unsubscribe"):
                channel = message["channel"]
                yield kind, channel.decode() if isinstance(channel, bytes) else channel, message["data"]

    async def _sharded_events(self) -> AsyncIterator[tuple[str, str, Any]]:
        """A Redis Cluster: room channels over sharded pub/sub (``backend.sharded_pubsub``)."""
        cluster = await redis_client.connect(self.redis_url, **self.redis_options)
        subscriber = ShardedSubscriber(cluster, self.channel, self.redis_options)
        try:
            self.routes.attach(subscriber)
            await subscriber.start(self.routes.wanted())
            while True:
                yield await subscriber.events.get()
        finally:
            await subscriber.close()
            await cluster.aclose()

    on_epoch: Callable[[dict[str, Any]], None] | None = None
    """Resets this instance's relays for a room whose history began again (backend.chat.apply_epoch)."""
    on_evict: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    """Takes a removed member's sockets on this instance out of the room (backend.chat.evict_here)."""
    on_revoke: Callable[[str], Awaitable[None]] | None = None
    """Ends this instance's connections of a session another instance revoked (logout)."""

    async def _handle_emit(self, message):  # type: ignore[no-untyped-def]
        data = message.get("data")
        single = isinstance(data, list) and len(data) == 1 and not message.get("binary")
        if single and message.get("event") == "epoch" and isinstance(data[0], dict) and self.on_epoch is not None:
            self.on_epoch(data[0])  # before the room's next message; the sockets hear it from there
            return
        if single and message.get("event") == EVICT_EVENT and isinstance(data[0], dict):
            if self.on_evict is not None:
                await self.on_evict(data[0])
            return
        if single and message.get("event") == REVOKE_EVENT and isinstance(data[0], dict):
            if self.on_revoke is not None and isinstance(data[0].get("session"), str):
                await self.on_revoke(data[0]["session"])
            return
        if single and message.get("event") == "message" and self.on_arrival is not None:
            self.on_arrival(data[0])
        if single and self.route_to_relay(message.get("event"), data[0]):
            return
        if single and self.fan_out(
            message.get("event"),
            data[0],
            message.get("namespace"),
            message.get("room"),
            message.get("skip_sid"),
            message.get("callback"),
        ):
            return
        await super()._handle_emit(message)
