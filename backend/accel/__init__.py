"""The fast path: every place fleetchat reaches into a library's internals, in one package.

Each module is one cut: what it buys, the exact library versions it is
written against (``Cut.requires``) and whether it applied (``Cut.applied``).
``configure`` applies them from the app's composition root
(``backend.app.create_app``), never at import; ``CHAT_ACCEL=off`` applies none,
so the stock libraries run. ``/metrics`` exports ``fleetchat_accel_applied{cut}``
and ``/readyz`` lists them. The README's "The fast path" section lists every
cut with its figure and its test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import engineio

from backend.accel import (
    decline_deflate,
    direct_transport,
    idle_memory,
    idle_memory_hypercorn,
    lean_rooms,
    lean_websocket,
    quiet_gc,
)
from backend.accel.base import Cut
from backend.accel.server import ChatServer, engineio_class, hang_up

__all__ = ["CUTS", "ChatServer", "Cut", "configure", "details", "engineio_server_class", "hang_up", "settle"]

CUTS: tuple[Cut, ...] = (
    decline_deflate.CUT,
    quiet_gc.CUT,
    idle_memory.CUT,
    idle_memory_hypercorn.CUT,
    lean_websocket.CUT,
    direct_transport.CUT,
    lean_rooms.CUT,
)
"""In dependency order: a cut comes after those it ``needs``."""


def configure(enabled: bool = True, switched_off: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Apply every cut whose gate passes (or withdraw them all when ``enabled`` is False);
    ``switched_off`` maps a cut's name to the setting that turned it off. Returns name -> applied."""
    switched_off = switched_off or {}
    for cut in CUTS:
        missing = [name for name in cut.needs if not by_name(name).applied]
        if not enabled:
            cut.withdraw("off: CHAT_ACCEL=off")
        elif cut.name in switched_off:
            cut.withdraw(f"off: {switched_off[cut.name]}")
        elif missing and cut.refusal() is None:
            cut.withdraw(f"off: needs {', '.join(missing)}")
        else:
            cut.apply()  # refused by its gate (with its warning), or applied
    return {cut.name: cut.applied for cut in CUTS}


def by_name(name: str) -> Cut:
    return next(cut for cut in CUTS if cut.name == name)


def engineio_server_class() -> type[engineio.AsyncServer]:
    """The engine.io server class for the cuts applied now (stock ``engineio.AsyncServer`` when none)."""
    applied = [cut for cut in reversed(CUTS) if cut.applied]  # the last cut's mixin is the outermost
    return engineio_class(
        [cut.server_mixin for cut in applied if cut.server_mixin is not None],
        [cut.socket_mixin for cut in applied if cut.socket_mixin is not None],
    )


def details() -> list[dict[str, Any]]:
    """Each cut's name, library, required versions, state and why, for ``/readyz``."""
    return [
        {"cut": cut.name, "library": cut.library, "versions": cut.requires, "applied": cut.applied, "why": cut.reason}
        for cut in CUTS
    ]


def settle() -> None:
    """What applies once serving starts (the garbage collector's freeze)."""
    quiet_gc.settle()
