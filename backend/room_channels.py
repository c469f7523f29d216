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

    Every connection is in two rooms of its own (its user's and its name's), so
    this is per-connection state: one int per room, in one dict keyed by the
    room's own string (the one python-socketio's rooms hold), with channel names
    built only to send them. Three sets of channel strings cost 0.5 KB per
    connection more.
    """

    def __init__(self, prefix: str, linger: float = 5.0) -> None:
        self.prefix = prefix
        self._head = prefix + ":{"
        self.linger = linger
        self._rooms: dict[str, int] = {}
        """Rooms whose channel this instance wants (a listener, or lingering after the
        last): ``listeners << 1 | confirmed`` (confirmed: Redis said it is subscribed)."""
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._drops: dict[str, asyncio.TimerHandle] = {}
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        """Rooms whose (un)subscription goes with the next batch."""
        self._flushing = False
        self._pubsub: Any = None
        self._sends: set[asyncio.Task[None]] = set()
        self.subscribes = 0
        """SUBSCRIBE commands sent (each may name many channels)."""

    def channel(self, room: str) -> str:
        return room_channel(self.prefix, room)

    def room_of(self, channel: str) -> str | None:
        """The room of one of this instance's channels (None for any other)."""
        head = self._head
        return channel[len(head) : -1] if channel.startswith(head) and channel.endswith("}") else None

    @staticmethod
    def routed(room: Any) -> bool:
        return isinstance(room, str) and ROUTED_ROOM.match(room) is not None

    # -- listeners ---------------------------------------------------------------

    def add(self, room: str) -> None:
        """A local listener arrived in ``room``."""
        state = self._rooms.get(room)
        if state is None:
            self._rooms[room] = 2
            self._to_unsubscribe.discard(room)
            self._to_subscribe.add(room)
            self._schedule()
            return
        if state < 2:
            drop = self._drops.pop(room, None)
            if drop is not None:
                drop.cancel()
        self._rooms[room] = state + 2

    def remove(self, room: str) -> None:
        """A local listener left ``room``; its channel goes after ``linger`` if nobody came back."""
        state = self._rooms.get(room)
        if state is None or state < 2:
            return
        state -= 2
        self._rooms[room] = state
        if state < 2 and room not in self._drops:
            self._drops[room] = asyncio.get_running_loop().call_later(self.linger, self._drop, room)

    def _drop(self, room: str) -> None:
        self._drops.pop(room, None)
        state = self._rooms.get(room)
        if state is None or state >= 2:
            return
        del self._rooms[room]
        self._to_subscribe.discard(room)
        self._to_unsubscribe.add(room)
        self._schedule()

    def listeners(self, room: str) -> int:
        return self._rooms.get(room, 0) >> 1

    def count(self) -> int:
        """Channels wanted now (``fleetchat_room_channels``)."""
        return len(self._rooms)

    def wanted(self) -> list[str]:
        """Every channel to subscribe to after (re)connecting."""
        return sorted(self.channel(room) for room in self._rooms)

    def active(self, room: str) -> bool:
        return room in self._rooms

    def is_confirmed(self, room: str) -> bool:
        return self._rooms.get(room, 0) & 1 == 1

    async def ready(self, room: str, timeout: float = 2.0) -> bool:
        """Wait until Redis confirmed the subscription to ``room``'s channel
        (False after ``timeout``: Redis is away, and the relay's sweep covers it)."""
        if self.is_confirmed(room) or room not in self._rooms:
            return self.is_confirmed(room)
        waiter = self._waiters.get(room)
        if waiter is None:
            waiter = self._waiters[room] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        return True

    # -- the listener's connection -------------------------------------------------

    def attach(self, pubsub: Any) -> None:
        """The listener (re)connected and subscribed to ``wanted()``: confirmations follow."""
        self._pubsub = pubsub
        self._unconfirm_all()
        self._to_subscribe.clear()
        self._to_unsubscribe.clear()

    def detach(self) -> None:
        """The listener lost Redis: nothing is confirmed until it subscribes again."""
        self._pubsub = None
        self._unconfirm_all()

    def _unconfirm_all(self) -> None:
        rooms = self._rooms
        for room, state in rooms.items():
            if state & 1:
                rooms[room] = state & ~1

    def confirmed(self, channel: str) -> None:
        room = self.room_of(channel)
        state = None if room is None else self._rooms.get(room)
        if room is None or state is None:
            return
        self._rooms[room] = state | 1
        waiter = self._waiters.pop(room, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def unconfirmed(self, channel: str) -> None:
        room = self.room_of(channel)
        state = None if room is None else self._rooms.get(room)
        if room is not None and state is not None:
            self._rooms[room] = state & ~1

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
        subscribe, self._to_subscribe = sorted(map(self.channel, self._to_subscribe)), set()
        unsubscribe, self._to_unsubscribe = sorted(map(self.channel, self._to_unsubscribe)), set()
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
