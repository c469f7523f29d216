"""Rooms as plain dicts: about 270 bytes less per room a socket is in.

python-socketio 5.18's ``BaseManager`` keeps each room as a ``bidict``
(``rooms[namespace][room][sid] = eio_sid``), a pair of dicts and an object,
about 480 bytes for a room of one. Only the ``None`` room (every connected
sid) is ever read backwards (``sid_from_eio_sid`` reads its ``_invm``, and
``pre_connect`` relies on its ``ValueDuplicationError``); every other room is
only read forwards (``get_participants`` reads ``_fwdm``). fleetchat puts
each socket in three one-member rooms of its own (its sid's room, its name's
mention room and its user's room), so on an idle connection those bidicts
were a tenth of its memory. With the cut, ``basic_enter_room`` (an instance
attribute of fleetchat's own manager, set by ``ChatServer``; the library's
class is untouched) makes every room but ``None`` a ``Room``: a dict whose
``_fwdm`` is itself, about 200 bytes for a room of one.
"""

from __future__ import annotations

import types
from typing import Any

from backend.accel.base import Cut


class Room(dict[str, str]):
    """One room's ``sid -> eio_sid``, readable where python-socketio reads a bidict forwards."""

    __slots__ = ()

    @property
    def _fwdm(self) -> dict[str, str]:
        return self


def basic_enter_room(self: Any, sid: str, namespace: str, room: Any, eio_sid: str | None = None) -> None:
    """python-socketio 5.18.1's ``BaseManager.basic_enter_room``, with a ``Room`` for every room but ``None``."""
    if room is None:
        # every connected sid, read backwards too: the library's own bidict
        type(self).basic_enter_room(self, sid, namespace, room, eio_sid)
        return
    if eio_sid is None and namespace not in self.rooms:
        raise ValueError("sid is not connected to requested namespace")
    if sid != room and self.is_sid_room(namespace, room):
        raise ValueError("cannot enter a sid room")
    rooms = self.rooms.setdefault(namespace, {})
    members = rooms.get(room)
    if members is None:
        members = rooms[room] = Room()
    if eio_sid is None:
        eio_sid = rooms[None][sid]
    members[sid] = eio_sid


def attach(manager: Any) -> None:
    """Make ``manager`` (fleetchat's own, one per server) build its rooms as ``Room``."""
    manager.basic_enter_room = types.MethodType(basic_enter_room, manager)


CUT = Cut(
    name="lean_rooms",
    library="python-socketio",
    requires={"python-socketio": "5.18.1"},
    buys="a room a socket is in costs ~200 bytes instead of ~480 (three per connection)",
)
