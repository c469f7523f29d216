"""Engine.IO websockets handed over from hypercorn to a small asyncio protocol.

hypercorn does the part of a connection that needs an HTTP server: it parses
the upgrade request, python-engineio checks it (origin, path, ``EIO``) and
accepts it, and hypercorn writes the ``101``. From then on a Socket.IO
connection is only WebSocket frames, and under hypercorn each idle one kept a
connection task, an ASGI app task, asyncio streams, an h11 and a wsproto
state machine, an ASGI receive queue, engine.io's send queue and the
coroutine frames between them: ~32 KB per idle connection against ~13 KB for
Node's socket.io (bench/README.md, "Levers").

``hand_off`` moves such a connection, right after the handshake, onto a
``LeanWebSocket``: the same transport with this protocol attached instead of
hypercorn's. It parses client frames itself (RFC 6455: masking, fragments,
control frames, close codes, size limits), feeds Engine.IO packets to the
engine.io socket in order, and writes what the socket sends straight to the
transport (``DirectQueue`` stands in for engine.io's send queue, so acks,
pings and room events leave in the order they were produced). An idle
connection then holds the transport, this protocol and engine.io's socket:
no task, no queue, no stream. Pings are timers, not sleeping tasks.

Anything unexpected in one connection (TLS terminated by hypercorn, bytes
already buffered by hypercorn) leaves it with hypercorn and a websocket loop
that mirrors engine.io's. The cut reads hypercorn's, h11's, wsproto's and
asyncio's internals, so it applies only on the exact versions below
(``CHAT_LEAN_WEBSOCKETS=false`` or ``CHAT_ACCEL=off``: engine.io's own handler
runs, unchanged). Measured: RSS per idle connection 31.9 -> 7.1 KB, 0.55x Node.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any

from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from backend.accel.base import PYTHON, Cut

log = logging.getLogger(__name__)

SLOW_CONSUMER_BYTES = 4 << 20
"""A recipient with more unsent bytes than this cannot keep up and is cut off
rather than growing this process's memory without bound."""

CLOSE_LINGER = 2.0
"""After sending a close frame, read and discard for up to this long while the
peer closes its side: closing a socket with unread input makes the kernel send
a reset, which can destroy the close frame before the peer reads it."""

FRAGMENT_COST = 16
"""Bytes each fragment of a message counts against the size limit beyond its
payload, so a stream of empty fragments is bounded too."""

INBOX_PAUSE = 64
"""Stop reading a socket while this many of its packets wait for their handler,
so a client that floods frames faster than they are handled is paced by TCP."""

# RFC 6455 close codes
NORMAL = 1000
PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
TOO_BIG = 1009

_live = 0


def live_count() -> int:
    """Connections served by ``LeanWebSocket`` in this process right now."""
    return _live


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final WebSocket frame (RFC 6455, section 5.2): the server side."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + n.to_bytes(8, "big")
    return header + payload


def text_frame(payload: bytes) -> bytes:
    return frame(0x1, payload)


def close_frame(code: int) -> bytes:
    return frame(0x8, code.to_bytes(2, "big"))


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR a client frame's payload with its 4-byte mask, as one big-integer operation."""
    n = len(payload)
    if not n:
        return b""
    key = (bytes(mask) * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _valid_close_code(code: int) -> bool:
    """A code a peer may send (RFC 6455, section 7.4): the defined ones, or 3000-4999."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code < 5000


class _Closed(Exception):
    """The frame parser met something that ends the connection with ``code``."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class LeanWebSocket(asyncio.Protocol):
    """The WebSocket of one Engine.IO socket, on its transport, after the handshake."""

    __slots__ = (
        "_buf",
        "_inbox",
        "_lost",
        "_opcode",
        "_parts",
        "_parts_size",
        "_paused",
        "_task",
        "closed",
        "sock",
        "transport",
    )

    def __init__(self, sock: Any, transport: asyncio.Transport) -> None:
        global _live
        self.sock = sock
        self.transport = transport
        self.closed = False
        """No frame is written once this is set: a close frame went out, or the peer is gone."""
        self._buf: bytearray | None = None
        self._parts: list[bytes] | None = None
        self._parts_size = 0
        self._opcode = 0
        self._inbox: collections.deque[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = False
        self._paused = False
        _live += 1

    # -- writing -------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        transport = self.transport
        if transport.get_write_buffer_size() > SLOW_CONSUMER_BYTES:
            log.warning("%s: cut off, %d bytes unsent", self.sock.sid, transport.get_write_buffer_size())
            self.closed = True
            transport.abort()
            return
        transport.write(data)

    def close(self, code: int = NORMAL) -> None:
        """Send a close frame and end our side of the TCP connection after it; the
        connection ends when the peer closes its side, or ``CLOSE_LINGER`` later."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        transport.write(close_frame(code))
        try:
            transport.write_eof()
        except (NotImplementedError, OSError, RuntimeError):
            transport.close()
            return
        asyncio.get_running_loop().call_later(CLOSE_LINGER, self._hang_up)

    def _hang_up(self) -> None:
        if not self._lost:
            self.transport.abort()

    # -- reading -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self._buf
        if buf is not None:
            buf += data
        else:
            buf = data  # type: ignore[assignment]
        try:
            used = self._frames(buf)
        except _Closed as exc:
            log.info("%s: closing websocket (%d): %s", self.sock.sid, exc.code, exc)
            self._buf = None
            self.close(exc.code)
            return
        if used >= len(buf) or self.closed:
            self._buf = None
        elif isinstance(buf, bytearray):
            del buf[:used]
            self._buf = buf
        else:
            self._buf = bytearray(buf[used:])

    def _byte_limit(self) -> int:
        """Bytes a frame or fragmented message may carry before it is refused unread:
        the packet limit counts characters, and UTF-8 takes at most 4 bytes for one."""
        return self.sock.server.max_http_buffer_size * 4 + 64

    def _frames(self, buf: bytes | bytearray) -> int:
        """Handle every complete frame in ``buf``; how many bytes they took."""
        limit = self._byte_limit()
        pos, end = 0, len(buf)
        while end - pos >= 2 and not self.closed and not self._paused:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if not b1 & 0x80:
                raise _Closed(PROTOCOL_ERROR, "unmasked client frame")
            if length > limit:
                raise _Closed(TOO_BIG, f"frame of {length} bytes")
            start = pos + head + 4
            if end - start < length:
                break
            self._frame(b0, unmask(buf[start : start + length], buf[pos + head : start]))
            pos = start + length
        return pos

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        final = b0 & 0x80
        if b0 & 0x70:
            raise _Closed(PROTOCOL_ERROR, "reserved bits set: no extension was agreed")
        if opcode >= 0x8:
            if not final or len(payload) > 125:
                raise _Closed(PROTOCOL_ERROR, "fragmented or oversized control frame")
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL
                self.close(code if len(payload) != 1 and _valid_close_code(code) else PROTOCOL_ERROR)
            elif opcode == 0x9:
                self.write(frame(0xA, payload))
            elif opcode != 0xA:
                raise _Closed(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            return
        if opcode == 0x0:
            if self._parts is None:
                raise _Closed(PROTOCOL_ERROR, "continuation without a message")
            self._parts.append(payload)
            self._parts_size += len(payload) + FRAGMENT_COST
            if self._parts_size > self._byte_limit():
                raise _Closed(TOO_BIG, "fragmented message too big")
            if final:
                payload, opcode, self._parts = b"".join(self._parts), self._opcode, None
            else:
                return
        elif opcode in (0x1, 0x2):
            if self._parts is not None:
                raise _Closed(PROTOCOL_ERROR, "new message inside a fragmented one")
            if not final:
                self._parts, self._opcode, self._parts_size = [payload], opcode, len(payload) + FRAGMENT_COST
                return
        else:
            raise _Closed(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        self._message(opcode, payload)

    def _message(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            try:
                self.message(payload.decode())
            except UnicodeDecodeError:
                raise _Closed(INVALID_DATA, "text frame that is not UTF-8") from None
        else:
            self.message(payload)

    def message(self, data: str | bytes) -> None:
        """One whole message from the client: an Engine.IO packet for the socket."""
        if len(data) > self.sock.server.max_http_buffer_size:
            raise _Closed(TOO_BIG, f"message of {len(data)} characters")
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
            if not 0 <= pkt.packet_type < len(eio_packet.packet_names):
                raise ValueError(f"unknown packet type {pkt.packet_type}")
        except Exception as exc:
            # Not Engine.IO: hang up, as socket.io's own server does.
            log.warning("%s: closing on a malformed packet (%s)", self.sock.sid, exc)
            raise _Closed(PROTOCOL_ERROR, "malformed Engine.IO packet") from None
        inbox = self._inbox
        if inbox is None:
            inbox = self._inbox = collections.deque()
        inbox.append(pkt)
        if len(inbox) >= INBOX_PAUSE and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._receive())

    async def _receive(self) -> None:
        """Hand queued packets to the engine.io socket one at a time, in order (a
        Socket.IO CONNECT finishes before the events that follow it); once the
        peer is gone, close the engine.io socket after what it had sent."""
        sock = self.sock
        try:
            while self._inbox:
                pkt = self._inbox.popleft()
                try:
                    await sock.receive(pkt)
                except (eio_exceptions.UnknownPacketError, eio_exceptions.SocketIsClosedError):
                    pass  # a closed socket is handled just below
                except Exception:
                    log.exception("%s: receive error", sock.sid)
                if sock.closed:
                    self._inbox.clear()
                    self.close()
                elif self._paused and len(self._inbox) < INBOX_PAUSE // 2:
                    self._paused = False
                    self.transport.resume_reading()
                    self.data_received(b"")  # the frames left unparsed when it paused
            self._inbox = None
            if self._lost:
                await self._forget()
        finally:
            self._task = None

    def connection_lost(self, exc: Exception | None) -> None:
        global _live
        _live -= 1
        self.closed = True
        self._lost = True
        self._buf = self._parts = None
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._receive())

    async def _forget(self) -> None:
        sock = self.sock
        server = sock.server
        try:
            if not sock.closed:
                await sock.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
        finally:
            if server.sockets.get(sock.sid) is sock:
                del server.sockets[sock.sid]
            sock.queue = _GONE


class _GoneQueue:
    """The send queue of a socket whose websocket has closed: packets go nowhere.
    Also the part of ``asyncio.Queue`` that python-engineio uses on a socket."""

    __slots__ = ()

    def put_nowait(self, pkt: Any) -> None:
        return None

    async def put(self, pkt: Any) -> None:
        self.put_nowait(pkt)

    async def join(self) -> None:
        return None

    def task_done(self) -> None:
        return None

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0


class DirectQueue(_GoneQueue):
    """engine.io's send queue for a handed-off socket: a packet put here is
    written to the websocket at once. ``None`` (engine.io's "stop writing") and
    a CLOSE packet close the websocket."""

    __slots__ = ("ws",)

    def __init__(self, ws: LeanWebSocket) -> None:
        self.ws = ws

    def put_nowait(self, pkt: Any) -> None:
        ws = self.ws
        if pkt is None:
            ws.close()
            return
        encoded = pkt.encode()
        ws.write(frame(0x2, encoded) if isinstance(encoded, bytes) else text_frame(encoded.encode()))
        if pkt.packet_type == eio_packet.CLOSE:
            ws.close()


_GONE = _GoneQueue()


# -- pings -----------------------------------------------------------------------------


def ping(sock: Any) -> None:
    """Send a handed-off socket's Engine.IO ping now, and check for its PONG
    ``ping_timeout`` later: two timers, no task."""
    if sock.closing or sock.closed:
        return
    sent = sock.last_ping = time.time()
    sock.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
    asyncio.get_running_loop().call_later(sock.server.ping_timeout + 0.5, _pong_due, sock, sent)


def _pong_due(sock: Any, sent: float) -> None:
    """No PONG since the ping sent at ``sent``: engine.io closes the socket ("ping timeout")."""
    if sock.last_ping == sent and not sock.closing and not sock.closed:
        sock.server.start_background_task(_check_ping_timeout, sock)


async def _check_ping_timeout(sock: Any) -> None:
    try:
        await sock.check_ping_timeout()
    except eio_exceptions.SocketIsClosedError:
        pass  # closed meanwhile: nothing left to time out


# -- the hand-over ---------------------------------------------------------------------


class _DetachedWriter:
    """What hypercorn's connection writes to once its transport has been handed
    over: its last writes (a close frame when the ASGI app returns) and its
    close go nowhere, and the transport stays open for the new protocol. Also
    the transport of the asyncio ``StreamWriter`` left behind, whose ``__del__``
    closes a transport that is not closing."""

    __slots__ = ()
    transport = None

    def write(self, data: bytes) -> None:
        return None

    async def drain(self) -> None:
        return None

    def write_eof(self) -> None:
        return None

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None

    def is_closing(self) -> bool:
        return True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


_DETACHED = _DetachedWriter()


def hypercorn_connection(ws: Any) -> tuple[Any, Any, Any] | None:
    """(WSStream, H11Protocol, TCPServer) behind engine.io's ASGI websocket, when
    hypercorn serves it over HTTP/1.1 in the shape this module was written for."""
    try:
        from hypercorn.asyncio.tcp_server import TCPServer
        from hypercorn.protocol.h11 import H11Protocol
        from hypercorn.protocol.ws_stream import WSStream
    except ImportError:
        return None
    stream = getattr(getattr(ws, "asgi_send", None), "__self__", None)
    if not isinstance(stream, WSStream):
        return None
    h11 = getattr(stream.send, "__self__", None)
    tcp = getattr(getattr(h11, "send", None), "__self__", None)
    if not isinstance(h11, H11Protocol) or not isinstance(tcp, TCPServer):
        return None
    return stream, h11, tcp


def _accepted_connection(ws: Any) -> tuple[Any, Any, Any] | None:
    """``hypercorn_connection``, once the websocket is accepted and hypercorn holds
    no bytes after the upgrade request that it has not passed on yet."""
    found = hypercorn_connection(ws)
    if found is None:
        return None
    from hypercorn.protocol.h11 import H11WSConnection
    from hypercorn.protocol.ws_stream import ASGIWebsocketState

    stream, h11, _ = found
    if stream.closed or stream.state != ASGIWebsocketState.CONNECTED:
        return None
    if not isinstance(h11.connection, H11WSConnection) or h11.connection.buffer:
        return None
    return found


def _unread_messages(stream: Any, tcp: Any) -> list[str | bytes] | None:
    """The whole messages hypercorn has received for the app and the app has not
    read yet (a client may send right after the upgrade), or None when hypercorn
    holds a part of a frame or message, or the connection is not plain TCP."""
    proto = getattr(getattr(stream, "connection", None), "_proto", None)
    frames = getattr(proto, "_frame_decoder", None)
    wsproto_buffer = getattr(frames, "buffer", None)
    app_queue = getattr(getattr(stream, "app_put", None), "__self__", None)
    reader = tcp.reader
    if not (
        wsproto_buffer is not None
        and len(wsproto_buffer) == 0
        and getattr(frames, "header", True) is None
        and getattr(getattr(proto, "_message_decoder", None), "opcode", True) is None
        and stream.buffer.value is None
        and isinstance(app_queue, asyncio.Queue)
        and isinstance(getattr(reader, "_buffer", None), bytearray)
        and not getattr(reader, "_eof", True)  # the peer has not half-closed
        and reader.exception() is None
        and not tcp.send_lock.locked()  # no write of hypercorn's waits on a drain the new protocol would never wake
        and getattr(getattr(stream.connection, "state", None), "name", None) == "OPEN"
        and tcp.writer.get_extra_info("ssl_object") is None
    ):
        return None
    events = list(getattr(app_queue, "_queue", ()))
    if len(events) != app_queue.qsize():
        return None
    messages: list[str | bytes] = []
    for event in events:
        data = event.get("text") if event.get("text") is not None else event.get("bytes")
        if event.get("type") != "websocket.receive" or data is None:
            return None  # a disconnect: leave the connection to hypercorn
        messages.append(data)
    return messages


def is_handed_off(sock: Any) -> bool:
    return type(sock.queue) is DirectQueue


def transport_of(sock: Any) -> asyncio.Transport | None:
    """The transport a handed-off socket's frames can be written to, or None."""
    queue = sock.queue
    if type(queue) is not DirectQueue or queue.ws.closed:
        return None
    return queue.ws.transport


def hand_off(sock: Any, ws: Any) -> LeanWebSocket | None:
    """Move an accepted Engine.IO websocket from hypercorn onto a ``LeanWebSocket``.

    Everything here is synchronous, so no byte can arrive between the checks
    and the switch. hypercorn's connection task then sees end-of-file on a
    reader nobody feeds any more and ends, writing into ``_DetachedWriter``;
    its ASGI app task ends when the engine.io handler returns. None (nothing
    changed) when the connection is not in the expected state.
    """
    if not CUT.applied:
        return None
    found = _accepted_connection(ws)
    if found is None or sock.closed or sock.closing:
        return None
    stream, _, tcp = found
    unread = _unread_messages(stream, tcp)
    if unread is None:
        return None
    transport = tcp.writer.transport
    if transport is None or transport.is_closing() or not hasattr(transport, "set_protocol"):
        return None
    reader = tcp.reader
    leftover = bytes(reader._buffer)
    if unread:
        stream.app_put.__self__._queue.clear()
    lean = LeanWebSocket(sock, transport)
    transport.set_protocol(lean)
    reader._buffer.clear()
    if getattr(tcp.writer, "_transport", None) is transport:
        tcp.writer._transport = _DETACHED  # its __del__ would close the transport it no longer owns
    tcp.writer = _DETACHED
    stream.closed = True
    reader.feed_eof()
    transport.resume_reading()  # hypercorn's reader may have paused it
    pending = sock.queue
    sock.queue = DirectQueue(lean)
    while not pending.empty():  # the Engine.IO OPEN packet, queued before the handler ran
        sock.queue.put_nowait(pending.get_nowait())
    _slim_environ(getattr(ws, "environ", None))
    _slim_environ(_socketio_environ(sock))  # a long-polling start's: its HTTP request is long over
    ws.environ = ws.asgi_receive = ws.asgi_send = None
    try:
        for message in unread:
            lean.message(message)
    except _Closed as exc:
        lean.close(exc.code)
        return lean
    if leftover:
        lean.data_received(leftover)
    return lean


def _socketio_environ(sock: Any) -> dict[str, Any] | None:
    """The environ python-socketio keeps for this connection: the first request's."""
    owner = getattr(sock.server.handlers.get("connect"), "__self__", None)
    environs = getattr(owner, "environ", None)
    return environs.get(sock.sid) if isinstance(environs, dict) else None


_HANDSHAKE_ONLY = ("asgi.receive", "asgi.send", "wsgi.input", "wsgi.errors")


def _slim_environ(environ: dict[str, Any] | None) -> None:
    """python-socketio keeps each connection's environ for its lifetime: drop what
    only the handshake needed (the ASGI callables, which would keep hypercorn's
    connection alive, and the full scope), keep the headers and the peer."""
    if not isinstance(environ, dict):
        return
    scope = environ.get("asgi.scope")
    if isinstance(scope, dict):
        environ["asgi.scope"] = {"type": scope.get("type"), "client": scope.get("client"), "path": scope.get("path")}
    for key in _HANDSHAKE_ONLY:
        environ.pop(key, None)
    for key in [k for k in environ if k.startswith("HTTP_SEC_WEBSOCKET_")]:
        del environ[key]


class EnvironKeepingWebSocket:
    """Mixin for engine.io's ASGI ``WebSocket``: remembers the environ, so
    ``hand_off`` can slim it once the handshake is over."""

    environ: dict[str, Any] | None = None

    async def __call__(self, environ: dict[str, Any]) -> Any:
        self.environ = environ
        return await super().__call__(environ)  # type: ignore[misc]


class ServerMixin:
    """For fleetchat's ``engineio.AsyncServer``: its ASGI websockets keep their environ."""

    _async: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        upstream = self._async["websocket"]
        self._async["websocket"] = type("WebSocket", (EnvironKeepingWebSocket, upstream), {})


class SocketMixin:
    """For fleetchat's engine.io socket: the websocket handler that hands off, and a
    ``close`` that closes a handed-off socket's websocket with it."""

    async def close(self, *args: Any, **kwargs: Any) -> Any:
        """``AsyncSocket.close``, then the websocket of a handed-off socket closes
        too: upstream leaves that to its writer task, which the lean path has not
        (a ping timeout, for one, never sends the CLOSE packet that would do it)."""
        try:
            return await super().close(*args, **kwargs)  # type: ignore[misc]
        finally:
            if self.closed and type(self.queue) is DirectQueue:  # type: ignore[attr-defined]
                self.queue.ws.close()  # type: ignore[attr-defined]

    async def _websocket_handler(self, ws: Any) -> Any:
        """``AsyncSocket._websocket_handler`` of python-engineio 4.15: once the
        websocket is established (at once, or after the probe of an upgrade from
        long-polling) it is handed off to ``LeanWebSocket``; where that cannot be
        done, the receive loop awaits the websocket in its own task, under a
        timeout, instead of starting a task per packet."""
        sock: Any = self
        server = sock.server
        if sock.connected:
            if not await _upgrade_probe(sock, ws):
                return None
        else:
            sock.connected = True
            sock.upgraded = True
        if hand_off(sock, ws) is not None:
            server.logger.info("%s: websocket handed off to LeanWebSocket", sock.sid)
            return None
        writer_task = asyncio.ensure_future(_ws_writer(sock, ws))
        server.logger.info("%s: Upgrade to websocket successful", sock.sid)
        while True:
            try:
                async with asyncio.timeout(server.ping_interval + server.ping_timeout):
                    data = await ws.wait()
            except TimeoutError:
                # no pong in time; upstream's slower loop lets its service task close
                # the socket first, with the reason "ping timeout": do the same here
                try:
                    await sock.check_ping_timeout()
                except Exception:
                    pass
                break
            except (Exception, asyncio.CancelledError):
                break  # closed or cancelled: upstream ends the loop on any error
            if data is None or (data and len(data) > server.max_http_buffer_size):
                break
            try:
                pkt = eio_packet.Packet(encoded_packet=data)
                if not 0 <= pkt.packet_type < len(eio_packet.packet_names):
                    raise ValueError(f"unknown packet type {pkt.packet_type}")
            except Exception as exc:
                # Not Engine.IO: a protocol error. Hang up (as socket.io's own
                # server does) instead of logging a traceback per bad frame.
                server.logger.warning("%s: closing on a malformed packet (%s)", sock.sid, exc)
                break
            try:
                await sock.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                server.logger.info("Receive error -- socket is closed")
                break
            except Exception:
                server.logger.exception("Unknown receive error")
        await sock.queue.put(None)  # unlock the writer task so it can exit
        await writer_task
        await sock.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def _ws_writer(sock: Any, ws: Any) -> None:
    """engine.io's websocket writer task (a closure upstream)."""
    while True:
        try:
            packets = await sock.poll()
        except eio_exceptions.QueueEmpty:
            break
        if not packets:
            break  # the socket is closing
        try:
            for pkt in packets:
                await ws.send(pkt.encode())
        except Exception:
            break
    await ws.close()


async def _upgrade_probe(sock: Any, ws: Any) -> bool:
    """The probe of an upgrade from long-polling, as upstream's handler does it
    (python-engineio 4.15): PING "probe", PONG "probe", then UPGRADE."""

    async def wait() -> Any:
        data = await ws.wait()
        if data and len(data) > sock.server.max_http_buffer_size:
            raise ValueError("packet is too large")
        return data

    sock.upgrading = True  # hold packet sends during the upgrade
    try:
        try:
            probe = eio_packet.Packet(encoded_packet=await wait())
        except Exception:
            return False
        if probe.packet_type != eio_packet.PING or probe.data != "probe":
            sock.server.logger.info("%s: Failed websocket upgrade, no PING packet", sock.sid)
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        await sock.queue.put(eio_packet.Packet(eio_packet.NOOP))  # end the pending poll
        try:
            upgrade = eio_packet.Packet(encoded_packet=await wait())
        except Exception:
            return False
        if upgrade.packet_type != eio_packet.UPGRADE:
            sock.upgraded = False
            sock.server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet", sock.sid)
            return False
        sock.upgraded = True
        return True
    finally:
        sock.upgrading = False


CUT = Cut(
    name="lean_websocket",
    library="hypercorn, h11, wsproto, python-engineio, CPython asyncio",
    requires={
        "hypercorn": "0.18.0",
        "h11": "0.16.0",
        "wsproto": "1.3.2",
        "python-engineio": "4.15.1",
        PYTHON: "3.11",
    },
    server_mixin=ServerMixin,
    socket_mixin=SocketMixin,
    buys="RSS per idle connection 31.9 -> 7.1 KB (0.55x Node socket.io)",
    needs=("idle_memory", "decline_deflate"),
)
