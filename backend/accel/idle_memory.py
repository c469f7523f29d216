"""Fewer tasks and queues per idle connection in python-engineio.

An idle Socket.IO connection cost ~44 KB of Python heap (tracemalloc,
bench/README.md "Levers"), against ~12 KB for Node socket.io. Much of it is
asyncio machinery engine.io allocates per connection that does nothing while
the connection is idle: a task inside ``poll``'s ``wait_for`` (Python 3.11's
``wait_for`` wraps its awaitable in a task), a ping task asleep for
``ping_interval``, a send ``asyncio.Queue`` with four 760-byte deques almost
never used, and an ``AwaitablePayload`` class built per request by the ASGI
driver's ``translate_request`` and kept in the environ for the connection's
lifetime although a websocket never reads a body.

Same behaviour (timeouts, pings, close paths mirror python-engineio 4.15 line
by line), through fleetchat's own engine.io subclasses (``backend.accel.server``):
``asyncio.timeout`` instead of a task, a ping timer instead of a sleeping task,
56-byte lists for wait lists, one shared empty body. ``lean_queue`` reads
``asyncio.Queue`` internals, hence the gate on the interpreter too. Measured
with the hypercorn half (``idle_memory_hypercorn``): 44.5 -> 31.6 KB per idle
connection, tasks per connection 6 -> 3.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from backend.accel import lean_websocket
from backend.accel.base import PYTHON, Cut


class WaitList(list[Any]):
    """Waiters of an ``asyncio.Queue`` or ``asyncio.Event``: asyncio only appends,
    removes, iterates, tests and ``popleft``s them; a list is 56 bytes, a deque 760."""

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


def lean_queue(maxsize: int = 0) -> asyncio.Queue[Any]:
    """An ``asyncio.Queue`` whose (rarely non-empty) wait lists are small lists."""
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
    finished = getattr(queue, "_finished", None)
    waits = (getattr(queue, "_getters", None), getattr(queue, "_putters", None), getattr(finished, "_waiters", None))
    if all(isinstance(w, collections.deque) and not w for w in waits):
        queue._getters = WaitList()  # type: ignore[attr-defined]
        queue._putters = WaitList()  # type: ignore[attr-defined]
        finished._waiters = WaitList()  # type: ignore[union-attr]
        if 0 < maxsize <= 64 and isinstance(getattr(queue, "_queue", None), collections.deque):
            queue._queue = WaitList()  # type: ignore[attr-defined]  # bounded and short: pop(0) is cheap
    return queue


class _NoBody:
    """The ``wsgi.input`` of a websocket request: there is no body to read."""

    __slots__ = ()

    async def read(self, length: int | None = None) -> bytes:
        return b""


NO_BODY = _NoBody()


def bodiless_websockets(translate: Any) -> Any:
    """The ASGI driver's ``translate_request``, without the per-request body class for websockets."""

    async def translate_request(scope: Any, receive: Any, send: Any) -> Any:
        environ = await translate(scope, receive, send)
        if scope.get("type") == "websocket" and "wsgi.input" in environ:
            environ["wsgi.input"] = NO_BODY  # drops the per-request AwaitablePayload class
        return environ

    return translate_request


class ServerMixin:
    """For fleetchat's ``engineio.AsyncServer``: lean send queues, no body class per websocket."""

    _async: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async["translate_request"] = bodiless_websockets(self._async["translate_request"])

    def create_queue(self, *args: Any, **kwargs: Any) -> asyncio.Queue[Any]:
        return lean_queue(*args, **kwargs)


class SocketMixin:
    """For fleetchat's engine.io socket: ``poll`` without a task, pings on a timer."""

    queue: Any
    server: Any
    last_ping: float | None

    async def poll(self) -> list[Any]:
        """``AsyncSocket.poll`` without the task ``wait_for`` wraps ``queue.get()`` in."""
        queue = self.queue
        try:
            async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
                first = await queue.get()
            queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise eio_exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            queue.task_done()
            if pkt is None:
                queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    def schedule_ping(self) -> None:
        """``AsyncSocket.schedule_ping`` with a timer: a task exists only while the ping is sent."""
        if self.last_ping:
            self.last_ping = None
            asyncio.get_running_loop().call_later(self.server.ping_interval, _ping_due, self)


def _ping_due(sock: Any) -> None:
    if sock.closing or sock.closed:
        return
    if lean_websocket.is_handed_off(sock):
        lean_websocket.ping(sock)
    else:
        sock.server.start_background_task(_send_ping, sock)


async def _send_ping(sock: Any) -> None:
    """Upstream ``AsyncSocket._send_ping`` after its sleep."""
    if not sock.closing and not sock.closed:
        sock.last_ping = time.time()
        await sock.send(eio_packet.Packet(eio_packet.PING))


CUT = Cut(
    name="idle_memory",
    library="python-engineio, CPython asyncio",
    requires={"python-engineio": "4.15.1", PYTHON: "3.11"},
    server_mixin=ServerMixin,
    socket_mixin=SocketMixin,
    buys="with idle_memory_hypercorn: 44.5 -> 31.6 KB per idle connection, tasks per connection 6 -> 3",
)
