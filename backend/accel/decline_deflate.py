"""Decline ``permessage-deflate`` under hypercorn.

hypercorn accepts the extension whenever a client offers it (socket.io-client
and browsers always do) and has no setting to decline it. For chat traffic
that is the wrong trade: every frame is compressed once *per recipient*,
which undoes encode-once fan-out (py-spy: ``PerMessageDeflate.frame_outbound``
27% self time at saturation, bench/README.md "Levers"). Node's socket.io
declines it by default. Declining is one subclass: the offer is not accepted
and the handshake goes on uncompressed, as RFC 6455 allows. The lean
websocket parser relies on it: it closes a frame with RSV bits set (1002).
"""

from __future__ import annotations

from typing import Any

from wsproto.extensions import PerMessageDeflate

from backend.accel.base import Cut


class DeclinedPerMessageDeflate(PerMessageDeflate):
    """A permessage-deflate that never accepts an offer."""

    def accept(self, offer: Any) -> None:  # type: ignore[override]
        return None


def _install() -> None:
    from hypercorn.protocol import ws_stream

    ws_stream.PerMessageDeflate = DeclinedPerMessageDeflate  # type: ignore[misc]


def _uninstall() -> None:
    from hypercorn.protocol import ws_stream

    ws_stream.PerMessageDeflate = PerMessageDeflate  # type: ignore[misc]


CUT = Cut(
    name="decline_deflate",
    library="hypercorn, wsproto",
    requires={"hypercorn": "0.18.0", "wsproto": "1.3.2"},
    buys="saturation 7,785 -> 34,180 deliveries/s (4.4x): no per-recipient compression",
    install=_install,
    uninstall=_uninstall,
)
