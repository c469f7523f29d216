"""Fan-out to this instance's sockets, and the two Socket.IO managers.

``emit_local`` is the hot path of every delivery: the Socket.IO packet is
encoded once per broadcast and the same Engine.IO packet object (which caches
its own encoding) is queued on every recipient's socket, with no task or
await per recipient. python-socketio's generic ``emit`` instead spawns one
task per recipient. It relies on python-engineio's socket queue, which is why
requirements.txt pins python-engineio.

Chat ``message`` events, whichever way they arrive, go through the ``Relay``
so each socket sees every message once and in ``seq`` order. Everything else
(presence, typing, notifications) uses python-socketio's emit unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from backend.relay import Relay

NAMESPACE = "/"


def emit_local(server: socketio.AsyncServer, room: str, event: str, data: Any, skip_sid: str | None = None) -> int:
    """Queue one event to every local socket in ``room``; returns how many got it."""
    participants = server.manager.get_participants(NAMESPACE, room)
    encoded = server.packet_class(sio_packet.EVENT, namespace=NAMESPACE, data=[event, data]).encode()
    pkt = eio_packet.Packet(eio_packet.MESSAGE, encoded)
    sockets = server.eio.sockets
    count = 0
    for sid, eio_sid in participants:
        if sid == skip_sid:
            continue
        sock = sockets.get(eio_sid)
        if sock is None or sock.closed:
            continue
        sock.queue.put_nowait(pkt)
        count += 1
    return count


class RelayHook:
    """Where the managers hand chat messages to the relay (set after construction)."""

    relay: Relay | None = None

    def relay_message(self, data: Any) -> bool:
        if self.relay is None or not isinstance(data, dict) or "seq" not in data:
            return False
        self.relay.accept(data)
        return True


class LocalManager(RelayHook, socketio.AsyncManager):
    """Embedded mode: one process, in-memory rooms."""

    async def emit(self, event, data, namespace=None, room=None, skip_sid=None, callback=None, to=None, **kw):  # type: ignore[no-untyped-def,override]
        if event == "message" and self.relay_message(data):
            return
        await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kw)


class FleetManager(RelayHook, socketio.AsyncRedisManager):
    """Fleet mode: python-socketio's Redis pub/sub, with chat messages routed
    through the relay both for local sends and for what other instances publish."""

    on_resubscribe: Callable[[], None] | None = None
    """Called each time the listener (re)subscribes: whatever was published
    meanwhile is lost to pub/sub, so the relay sweeps the store at once."""
    max_retry_sleep = 2.0

    async def _redis_listen_with_retries(self):  # type: ignore[no-untyped-def]
        # Upstream backs off to 60 s; a chat wants to be back within seconds
        # of Redis returning, and to know when it resubscribed.
        retry_sleep = 0.1
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                retry_sleep = 0.1
                if self.on_resubscribe is not None:
                    self.on_resubscribe()
                async for message in self.pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._get_logger().warning("pub/sub listener lost Redis (%s); retrying in %.1fs", exc, retry_sleep)
                await asyncio.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, self.max_retry_sleep)

    async def _handle_emit(self, message):  # type: ignore[no-untyped-def]
        data = message.get("data")
        is_chat = message.get("event") == "message" and isinstance(data, list) and len(data) == 1
        if is_chat and self.relay_message(data[0]):
            return
        await super()._handle_emit(message)
