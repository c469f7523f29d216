"""fleetchat's own Socket.IO and Engine.IO server classes: where the cuts attach.

python-socketio builds its engine.io server from ``_engineio_server_class()``,
the supported hook: ``ChatServer`` returns a subclass of ``engineio.AsyncServer``
composed from the applied cuts' server mixins, so what they change is scoped
to fleetchat's server objects, not the library's classes. engine.io builds its
sockets as ``AsyncSocket`` inside ``_handle_connect`` with no hook; the
subclass's socket table gives each new socket fleetchat's socket class
(``AsyncSocket`` plus the applied cuts' socket mixins) as it is registered,
before it sends or receives anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import engineio
import socketio
from engineio.async_socket import AsyncSocket

from backend.accel import lean_rooms


class SocketTable(dict[str, Any]):
    """engine.io's ``sockets``: each socket registered becomes an instance of ``socket_class``."""

    __slots__ = ("socket_class",)

    def __init__(self, socket_class: type | None) -> None:
        super().__init__()
        self.socket_class = socket_class

    def __setitem__(self, sid: str, sock: Any) -> None:
        if self.socket_class is not None and type(sock) is AsyncSocket:
            sock.__class__ = self.socket_class  # same layout: the mixins add methods only
        super().__setitem__(sid, sock)


class FleetEngineIO(engineio.AsyncServer):
    """engine.io's server with its own copy of the driver table (so mixins may
    replace entries for this server only) and a ``SocketTable``."""

    socket_class: type | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async = dict(self._async)
        self.sockets = SocketTable(self.socket_class)


def engineio_class(server_mixins: Sequence[type], socket_mixins: Sequence[type]) -> type[engineio.AsyncServer]:
    """An ``engineio.AsyncServer`` with these mixins, whose sockets carry ``socket_mixins``."""
    if not server_mixins and not socket_mixins:
        return engineio.AsyncServer
    socket_class = type("FleetSocket", (*socket_mixins, AsyncSocket), {}) if socket_mixins else None
    return type("FleetEngineIOServer", (*server_mixins, FleetEngineIO), {"socket_class": socket_class})


class ChatServer(socketio.AsyncServer):
    """python-socketio's server, with the engine.io server class it is given, and a
    packet class of its own: python-socketio sets ``json=`` on its packet class, which
    would otherwise put fleetchat's JSON module under every Socket.IO client and server
    in the process (a test's client, for one). With the cut ``lean_rooms`` applied, its
    manager keeps rooms as plain dicts (``backend.accel.lean_rooms``)."""

    def __init__(self, *args: Any, engineio_server: type[engineio.AsyncServer] = engineio.AsyncServer, **kwargs: Any):
        self._fleet_engineio = engineio_server
        kwargs.setdefault("serializer", type("ChatPacket", (socketio.packet.Packet,), {}))
        super().__init__(*args, **kwargs)
        if lean_rooms.CUT.applied:
            lean_rooms.attach(self.manager)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return self._fleet_engineio


def hang_up(sock: Any) -> None:
    """Close an engine.io socket's websocket now, with a normal close.

    The convention it names: ``None`` on a socket's send queue means "stop
    writing". python-engineio's own writer task (stock, or the lean handler's
    copy) then closes the websocket; a handed-off socket's ``DirectQueue``
    (``lean_websocket``) closes it at once. A long-polling socket's next poll
    ends empty. Valid with every cut on or off."""
    sock.queue.put_nowait(None)
