"""Rooms as plain dicts: about 270 bytes less per room a socket is in.

python-socketio 5.18's ``BaseManager`` keeps each room as a ``bidict``
(``rooms[namespace][room][sid] = eio_sid``), a pair of dicts and an object,
about 480 bytes for a room of one. Only the ``None`` room (every connected
sid) is ever read backwards (``sid_from_eio_sid`` reads its ``_invm``, and
``pre_connect`` relies on its ``ValueDuplicationError``); every other room is
only read forwards (``get_participants`` reads ``_fwdm``). fleetchat puts
each socket in three one-member rooms of its own (its sid's room, its name's
mention room and its user's room), so on an idle connection those bidicts
were a tenth of its memory. With the cut, fleetchat's own manager (set up
by ``ChatServer``; the library's class is untouched) keeps its rooms in a
``RoomTable``: where ``basic_enter_room`` stores a new, empty ``bidict`` for
a room other than ``None``, the table stores a ``Room`` instead, a dict whose
``_fwdm`` is itself, about 200 bytes for a room of one. No method is
replaced, so a manager subclass's own ``basic_enter_room`` (and whatever it
does around ``super()``) runs as written.
"""

from __future__ import annotations

from typing import Any

from bidict import bidict

from backend.accel.base import Cut


class Room(dict[str, str]):
    """One room's ``sid -> eio_sid``, readable where python-socketio reads a bidict forwards."""

    __slots__ = ()

    @property
    def _fwdm(self) -> dict[str, str]:
        return self


class NamespaceRooms(dict[Any, Any]):
    """One namespace's rooms: a new empty bidict for any room but ``None`` is stored as a ``Room``."""

    __slots__ = ()

    def __setitem__(self, room: Any, members: Any) -> None:
        if room is not None and type(members) is bidict and not members:
            members = Room()
        super().__setitem__(room, members)


class RoomTable(dict[str, NamespaceRooms]):
    """``manager.rooms``: each namespace's rooms as ``NamespaceRooms``."""

    __slots__ = ()

    def __setitem__(self, namespace: str, rooms: Any) -> None:
        table = NamespaceRooms()
        for room, members in dict(rooms).items():
            table[room] = members
        super().__setitem__(namespace, table)


def attach(manager: Any) -> None:
    """Keep ``manager``'s rooms (fleetchat's own manager, one per server) in a ``RoomTable``."""
    table = RoomTable()
    for namespace, rooms in manager.rooms.items():
        table[namespace] = rooms
    manager.rooms = table


CUT = Cut(
    name="lean_rooms",
    library="python-socketio",
    requires={"python-socketio": "5.18.1"},
    buys="a room a socket is in costs ~200 bytes instead of ~480 (three per connection)",
)
