"""Tuning of the ASGI server underneath, applied when ``backend.app`` loads.

hypercorn accepts the ``permessage-deflate`` WebSocket extension whenever a
client offers it (socket.io-client and browsers always do) and offers no
setting to decline it. For chat traffic that is the wrong trade: every frame
is compressed once *per recipient*, which undoes encode-once fan-out and cost
a fifth of the CPU of a saturated instance (py-spy, bench/README.md). Node's
socket.io declines it by default for the same reason. Declining it here is
one subclass: the offer is simply not accepted, and the handshake goes on
uncompressed, as the WebSocket RFC allows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import inspect
import time
from functools import partial
from typing import Any

from wsproto.extensions import PerMessageDeflate

from backend import lean_websocket


class DeclinedPerMessageDeflate(PerMessageDeflate):
    """A permessage-deflate that never accepts an offer."""

    def accept(self, offer: Any) -> None:  # type: ignore[override]
        return None


def quiet_garbage_collector(young_threshold: int = 20_000) -> None:
    """Fewer, cheaper collections once the app has started.

    Everything allocated by start-up (modules, the app, its routes) lives as
    long as the process: ``gc.freeze()`` moves it out of the collector's
    sight, so full collections no longer walk it. A larger young-generation
    threshold (the default is 700 allocations) makes collections rarer on a
    hot path that allocates a few objects per delivery and frees them at once.
    Measured on the fan-out scenario: p99 delivery latency about 17 -> 9 ms
    (bench/README.md, "Levers").
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


def decline_websocket_compression() -> None:
    try:
        from hypercorn.protocol import ws_stream
    except ImportError:  # another ASGI server: nothing to patch
        return
    ws_stream.PerMessageDeflate = DeclinedPerMessageDeflate  # type: ignore[misc]


# -- direct frame writes ------------------------------------------------------------
#
# Under hypercorn every frame takes ~10 Python calls (ASGI send, wsproto,
# h11 protocol, TCP server, a lock and a drain) per recipient. Server-to-client
# frames are unmasked, so one broadcast is the *same bytes* for every
# recipient: ``backend.fanout`` builds them once and writes them straight to
# each recipient's transport. This section finds that transport for a
# python-engineio websocket; anything unexpected (another ASGI server, a
# hypercorn that changed shape) returns None and fan-out falls back to
# engine.io's queue, which always works.

WS_TRANSPORT_ATTR = "fc_transport"


def _hypercorn_transport(ws: Any) -> Any:
    found = lean_websocket.hypercorn_connection(ws)
    if found is None:
        return None
    stream, _, tcp = found
    return stream, tcp.writer.transport


def remember_websocket_transports() -> None:
    """Record, on each engine.io socket, the transport its websocket writes to."""
    from engineio.async_socket import AsyncSocket

    original = AsyncSocket._websocket_handler
    if getattr(original, "fc_wrapped", False):
        return

    async def handler(self: Any, ws: Any) -> Any:
        setattr(self, WS_TRANSPORT_ATTR, _hypercorn_transport(ws))
        try:
            return await original(self, ws)
        finally:
            if WS_TRANSPORT_ATTR in self.__dict__:
                delattr(self, WS_TRANSPORT_ATTR)

    handler.fc_wrapped = True  # type: ignore[attr-defined]
    AsyncSocket._websocket_handler = handler  # type: ignore[method-assign]


def direct_transport(sock: Any) -> Any:
    """The transport to write frames to for this engine.io socket, or None."""
    if lean_websocket.is_handed_off(sock):
        return lean_websocket.transport_of(sock)
    found = getattr(sock, WS_TRANSPORT_ATTR, None)
    if found is None or not sock.upgraded or sock.upgrading:
        return None
    stream, transport = found
    if stream.closed or transport.is_closing():
        return None
    return transport


# -- memory per idle connection ----------------------------------------------------
#
# An idle Socket.IO connection under hypercorn cost ~44 KB of Python heap
# (tracemalloc, bench/README.md "Levers"), against ~12 KB for Node socket.io.
# Most of it is asyncio machinery that python-engineio and hypercorn allocate per
# connection and that does nothing while the connection is idle:
#
# * six tasks per connection: hypercorn's connection and ASGI app tasks, and
#   engine.io's writer, a task per receive (``ensure_future`` + ``wait_for``),
#   a task inside ``poll``'s ``wait_for`` (Python 3.11's ``wait_for`` wraps its
#   awaitable in a task) and a ping task asleep for ``ping_interval``;
# * two ``asyncio.Queue`` (engine.io's send queue, hypercorn's ASGI receive
#   queue), each with four deques of 760 bytes, almost all of them never used;
# * a class object (``AwaitablePayload``) built per request by engine.io's ASGI
#   ``translate_request`` and kept in the environ for the connection's lifetime,
#   although a websocket never reads a request body.
#
# ``trim_idle_connection_memory`` removes those: the same behaviour (timeouts,
# pings, close and error paths mirror python-engineio 4.15 line by line), with
# ``asyncio.timeout`` instead of extra tasks, a ping timer instead of a sleeping
# task, 56-byte lists for wait lists, and one shared empty body. Each piece checks
# that the library still has the shape it replaces and leaves it alone otherwise.


class _WaitList(list[Any]):
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
        queue._getters = _WaitList()  # type: ignore[attr-defined]
        queue._putters = _WaitList()  # type: ignore[attr-defined]
        finished._waiters = _WaitList()  # type: ignore[union-attr]
        if 0 < maxsize <= 64 and isinstance(getattr(queue, "_queue", None), collections.deque):
            queue._queue = _WaitList()  # type: ignore[attr-defined]  # bounded and short: pop(0) is cheap
    return queue


class _NoBody:
    """The ``wsgi.input`` of a websocket request: there is no body to read."""

    __slots__ = ()

    async def read(self, length: int | None = None) -> bytes:
        return b""


_NO_BODY = _NoBody()


async def _poll(self: Any) -> list[Any]:
    """``AsyncSocket.poll`` without the task ``wait_for`` wraps ``queue.get()`` in."""
    queue = self.queue
    try:
        async with asyncio.timeout(self.server.ping_interval + self.server.ping_timeout):
            first = await queue.get()
        queue.task_done()
    except (TimeoutError, asyncio.CancelledError):
        raise _eio_exceptions().QueueEmpty() from None
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


def _schedule_ping(self: Any) -> None:
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
        from engineio import packet

        sock.last_ping = time.time()
        await sock.send(packet.Packet(packet.PING))


async def _ws_writer(sock: Any, ws: Any) -> None:
    """engine.io's websocket writer task (a closure upstream)."""
    while True:
        try:
            packets = await sock.poll()
        except _eio_exceptions().QueueEmpty:
            break
        if not packets:
            break  # the socket is closing
        try:
            for pkt in packets:
                await ws.send(pkt.encode())
        except Exception:
            break
    await ws.close()


def _lean_websocket_handler() -> Any:
    async def handler(self: Any, ws: Any) -> Any:
        """``AsyncSocket._websocket_handler``: once the websocket is established
        (at once, or after the probe of an upgrade from long-polling) it is handed
        off to ``LeanWebSocket``; where that cannot be done, the receive loop awaits
        the websocket in its own task, under a timeout, instead of starting a task
        per packet."""
        from engineio import packet

        exceptions = _eio_exceptions()
        server = self.server
        if self.connected:
            if not await _upgrade_probe(self, ws):
                return None
        else:
            self.connected = True
            self.upgraded = True
        if lean_websocket.hand_off(self, ws) is not None:
            server.logger.info("%s: websocket handed off to LeanWebSocket", self.sid)
            return None
        writer_task = asyncio.ensure_future(_ws_writer(self, ws))
        server.logger.info("%s: Upgrade to websocket successful", self.sid)
        while True:
            try:
                async with asyncio.timeout(server.ping_interval + server.ping_timeout):
                    data = await ws.wait()
            except TimeoutError:
                # no pong in time; upstream's slower loop lets its service task close
                # the socket first, with the reason "ping timeout": do the same here
                with contextlib.suppress(Exception):
                    await self.check_ping_timeout()
                break
            except (Exception, asyncio.CancelledError):
                break  # closed or cancelled: upstream ends the loop on any error
            if data is None or (data and len(data) > server.max_http_buffer_size):
                break
            try:
                pkt = packet.Packet(encoded_packet=data)
                if not 0 <= pkt.packet_type < len(packet.packet_names):
                    raise ValueError(f"unknown packet type {pkt.packet_type}")
            except Exception as exc:
                # Not Engine.IO: a protocol error. Hang up (as socket.io's own
                # server does) instead of logging a traceback per bad frame.
                server.logger.warning("%s: closing on a malformed packet (%s)", self.sid, exc)
                break
            try:
                await self.receive(pkt)
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                server.logger.info("Receive error -- socket is closed")
                break
            except Exception:
                server.logger.exception("Unknown receive error")
        await self.queue.put(None)  # unlock the writer task so it can exit
        await writer_task
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)

    handler.fc_lean = True  # type: ignore[attr-defined]
    return handler


async def _upgrade_probe(sock: Any, ws: Any) -> bool:
    """The probe of an upgrade from long-polling, as upstream's handler does it
    (python-engineio 4.15): PING "probe", PONG "probe", then UPGRADE."""
    from engineio import packet

    async def wait() -> Any:
        data = await ws.wait()
        if data and len(data) > sock.server.max_http_buffer_size:
            raise ValueError("packet is too large")
        return data

    sock.upgrading = True  # hold packet sends during the upgrade
    try:
        try:
            probe = packet.Packet(encoded_packet=await wait())
        except Exception:
            return False
        if probe.packet_type != packet.PING or probe.data != "probe":
            sock.server.logger.info("%s: Failed websocket upgrade, no PING packet", sock.sid)
            return False
        await ws.send(packet.Packet(packet.PONG, data="probe").encode())
        await sock.queue.put(packet.Packet(packet.NOOP))  # end the pending poll
        try:
            upgrade = packet.Packet(encoded_packet=await wait())
        except Exception:
            return False
        if upgrade.packet_type != packet.UPGRADE:
            sock.upgraded = False
            sock.server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet", sock.sid)
            return False
        sock.upgraded = True
        return True
    finally:
        sock.upgrading = False


def _eio_exceptions() -> Any:
    from engineio import exceptions

    return exceptions


def _lean_spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
    """hypercorn 0.18's ``TaskGroup.spawn_app`` with a lean ASGI receive queue."""
    from hypercorn.asyncio.task_group import _handle

    app_queue = lean_queue(config.max_app_queue_size)

    def _call_soon(func: Any, *args: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(func(*args), self._loop)
        return future.result()

    self.spawn(_handle, app, config, scope, app_queue.get, send, partial(self._loop.run_in_executor, None), _call_soon)
    return app_queue.put


def _lean_event_wrapper(base: type) -> type:
    class LeanEventWrapper(base):  # type: ignore[valid-type,misc]
        """hypercorn's per-connection ``asyncio.Event`` (``can_read``) with a list for its waiters."""

        def __init__(self) -> None:
            super().__init__()
            event = getattr(self, "_event", None)
            if isinstance(getattr(event, "_waiters", None), collections.deque) and not event._waiters:  # type: ignore[union-attr]
                event._waiters = _WaitList()  # type: ignore[union-attr]

    return LeanEventWrapper


def trim_idle_connection_memory() -> None:
    """Apply the cuts above to python-engineio (and hypercorn, when it serves us).

    Call before ``remember_websocket_transports``, which wraps the websocket handler
    installed here. Each cut is skipped when the library no longer has the shape
    it was written against, which leaves that library's own (heavier) code in place.
    """
    from engineio.async_drivers import asgi as eio_asgi
    from engineio.async_server import AsyncServer
    from engineio.async_socket import AsyncSocket

    lean_websocket.install()
    if callable(getattr(AsyncServer, "create_queue", None)) and not getattr(AsyncServer.create_queue, "fc_lean", False):

        def create_queue(self: Any, *args: Any, **kwargs: Any) -> asyncio.Queue[Any]:
            return lean_queue(*args, **kwargs)

        create_queue.fc_lean = True  # type: ignore[attr-defined]
        AsyncServer.create_queue = create_queue  # type: ignore[method-assign]

    translate = eio_asgi._async.get("translate_request")
    if inspect.iscoroutinefunction(translate) and not getattr(translate, "fc_lean", False):

        async def translate_request(scope: Any, receive: Any, send: Any) -> Any:
            environ = await translate(scope, receive, send)
            if scope.get("type") == "websocket" and "wsgi.input" in environ:
                environ["wsgi.input"] = _NO_BODY  # drops the per-request AwaitablePayload class
            return environ

        translate_request.fc_lean = True  # type: ignore[attr-defined]
        eio_asgi._async["translate_request"] = translate_request

    lean_socket = hasattr(asyncio, "timeout") and inspect.iscoroutinefunction(AsyncSocket.poll)
    if lean_socket and not hasattr(AsyncSocket, "fc_lean"):
        handler = AsyncSocket._websocket_handler
        if getattr(handler, "fc_wrapped", False):
            return  # remember_websocket_transports ran first: keep upstream's handler under it
        AsyncSocket.poll = _poll  # type: ignore[method-assign]
        AsyncSocket.schedule_ping = _schedule_ping  # type: ignore[method-assign]
        AsyncSocket._websocket_handler = _lean_websocket_handler()  # type: ignore[method-assign]
        AsyncSocket.fc_lean = True  # type: ignore[attr-defined]

    try:
        from hypercorn.asyncio.task_group import TaskGroup, _handle  # noqa: F401
        from hypercorn.asyncio.worker_context import EventWrapper, WorkerContext
    except ImportError:  # another ASGI server, or a hypercorn of another shape
        return
    if WorkerContext.event_class is EventWrapper:
        WorkerContext.event_class = _lean_event_wrapper(EventWrapper)  # type: ignore[misc]
    if inspect.iscoroutinefunction(TaskGroup.spawn_app) and not getattr(TaskGroup.spawn_app, "fc_lean", False):

        async def spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
            return _lean_spawn_app(self, app, config, scope, send)

        spawn_app.fc_lean = True  # type: ignore[attr-defined]
        TaskGroup.spawn_app = spawn_app  # type: ignore[method-assign]
