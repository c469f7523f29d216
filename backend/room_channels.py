"""Which pub/sub channels this instance listens to: one per room it has someone in.

python-socketio's Redis manager carries every event of the fleet on one
channel, so each instance receives, decodes and drops the traffic of every
room it has no member in: the fleet's total is capped by what one instance
can throw away. Here a room's events go to the room's own channel, and an
instance subscribes to it while it has a local listener (a socket in the
Socket.IO room, or a ``/ws`` bridge), the way Centrifugo's Redis engine and
socket.io's sharded adapter do. A message then reaches only the instances
that have someone to deliver it to.

The channel carries the room's hash tag (``fleetchat:{general}``), so in a
Redis Cluster it lives in the same slot as the room's keys: the append script
can publish it atomically with the store.

A room's channel is dropped ``linger`` seconds after its last local listener
left, so a page reload or a reconnect does not pay an unsubscribe and a
subscribe (and the relay's catch-up) each time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

log = logging.getLogger(__name__)

ROUTED_ROOM = re.compile(r"^(?:[a-z0-9][a-z0-9_-]{0,39}|user:[0-9a-zA-Z_:-]{1,80}|@[^{}\s]{1,80})$")
"""Rooms with a channel of their own: chat rooms (``models.ROOM_PATTERN``), a user's
connections (``user:<id>``) and a name's mention room (``@<name>``). Anything else
(a broadcast, a session revoke, a remote sid) goes on the fleet's shared channel."""


def room_channel(prefix: str, room: str) -> str:
    """The channel of ``room``: the room's name as its Redis Cluster hash tag."""
    return prefix + ":{" + room + "}"


class RoomChannels:
    """Reference counts of local listeners per room, and the subscriptions they imply.

    ``add``/``remove`` are synchronous (python-socketio enters rooms from sync
    code); the SUBSCRIBE and UNSUBSCRIBE commands they cause are sent once per
    event-loop tick, batched, on the listener's connection. ``ready`` waits for
    Redis to confirm a room's subscription: from then on every publish to it
    reaches this instance, so history read afterwards and live delivery meet
    without a gap.
    """

    def __init__(self, prefix: str, linger: float = 5.0) -> None:
        self.prefix = prefix
        self.linger = linger
        self._refs: dict[str, int] = {}
        self._active: set[str] = set()
        """Channels this instance wants (subscribed, or on their way)."""
        self._confirmed: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._drops: dict[str, asyncio.TimerHandle] = {}
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._flushing = False
        self._pubsub: Any = None
        self._sends: set[asyncio.Task[None]] = set()
        self.subscribes = 0
        """SUBSCRIBE commands sent (each may name many channels)."""

    def channel(self, room: str) -> str:
        return room_channel(self.prefix, room)

    @staticmethod
    def routed(room: Any) -> bool:
        return isinstance(room, str) and ROUTED_ROOM.match(room) is not None

    # -- listeners ---------------------------------------------------------------

    def add(self, room: str) -> None:
        """A local listener arrived in ``room``."""
        count = self._refs.get(room, 0)
        self._refs[room] = count + 1
        if count:
            return
        channel = self.channel(room)
        drop = self._drops.pop(channel, None)
        if drop is not None:
            drop.cancel()
        if channel not in self._active:
            self._active.add(channel)
            self._to_unsubscribe.discard(channel)
            self._to_subscribe.add(channel)
            self._schedule()

    def remove(self, room: str) -> None:
        """A local listener left ``room``; its channel goes after ``linger`` if nobody came back."""
        count = self._refs.get(room, 0) - 1
        if count > 0:
            self._refs[room] = count
            return
        self._refs.pop(room, None)
        channel = self.channel(room)
        if channel in self._active and channel not in self._drops:
            self._drops[channel] = asyncio.get_running_loop().call_later(self.linger, self._drop, room)

    def _drop(self, room: str) -> None:
        channel = self.channel(room)
        self._drops.pop(channel, None)
        if self._refs.get(room):
            return
        self._active.discard(channel)
        self._confirmed.discard(channel)
        self._to_subscribe.discard(channel)
        self._to_unsubscribe.add(channel)
        self._schedule()

    def listeners(self, room: str) -> int:
        return self._refs.get(room, 0)

    def count(self) -> int:
        """Channels wanted now (``fleetchat_room_channels``)."""
        return len(self._active)

    def wanted(self) -> list[str]:
        """Every channel to subscribe to after (re)connecting."""
        return sorted(self._active)

    def active(self, room: str) -> bool:
        return self.channel(room) in self._active

    async def ready(self, room: str, timeout: float = 2.0) -> bool:
        """Wait until Redis confirmed the subscription to ``room``'s channel
        (False after ``timeout``: Redis is away, and the relay's sweep covers it)."""
        channel = self.channel(room)
        if channel in self._confirmed or channel not in self._active:
            return channel in self._confirmed
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = self._waiters[channel] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        return True

    # -- the listener's connection -------------------------------------------------

    def attach(self, pubsub: Any) -> None:
        """The listener (re)connected and subscribed to ``wanted()``: confirmations follow."""
        self._pubsub = pubsub
        self._confirmed.clear()
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()

    def detach(self) -> None:
        """The listener lost Redis: nothing is confirmed until it subscribes again."""
        self._pubsub = None
        self._confirmed.clear()

    def confirmed(self, channel: str) -> None:
        if channel not in self._active:
            return
        self._confirmed.add(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def unconfirmed(self, channel: str) -> None:
        self._confirmed.discard(channel)

    def _schedule(self) -> None:
        if self._flushing or self._pubsub is None:
            return  # sent with the next batch, or with ``wanted()`` when the listener reconnects
        self._flushing = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        pubsub = self._pubsub
        if pubsub is None:
            return
        subscribe, self._to_subscribe = sorted(self._to_subscribe), set()
        unsubscribe, self._to_unsubscribe = sorted(self._to_unsubscribe), set()
        if unsubscribe:
            self._send(pubsub.unsubscribe(*unsubscribe))
        if subscribe:
            self.subscribes += 1
            self._send(pubsub.subscribe(*subscribe))

    def _send(self, command: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._sent(command))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _sent(self, command: Any) -> None:
        try:
            await command
        except Exception as exc:  # the listener notices too, reconnects and subscribes to wanted()
            log.warning("pub/sub (un)subscribe failed: %s", exc)
