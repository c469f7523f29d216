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

from typing import Any

from wsproto.extensions import PerMessageDeflate


class DeclinedPerMessageDeflate(PerMessageDeflate):
    """A permessage-deflate that never accepts an offer."""

    def accept(self, offer: Any) -> None:  # type: ignore[override]
        return None


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
            setattr(self, WS_TRANSPORT_ATTR, None)

    handler.fc_wrapped = True  # type: ignore[attr-defined]
    AsyncSocket._websocket_handler = handler  # type: ignore[method-assign]


def direct_transport(sock: Any) -> Any:
    """The transport to write frames to for this engine.io socket, or None."""
    found = getattr(sock, WS_TRANSPORT_ATTR, None)
    if found is None or not sock.upgraded or sock.upgrading:
        return None
    stream, transport = found
    if stream.closed or transport.is_closing():
        return None
    return transport


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455, section 5.2)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = bytes((0x81, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + n.to_bytes(8, "big")
    return header + payload
