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
