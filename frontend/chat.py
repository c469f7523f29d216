"""The page's handle on the tab's chat engine (assets/fleetchat.js).

The engine runs in the browser and holds the tab's Socket.IO connection to
the chat fleet, so Reflex's own server does no work per message. This module
is the one place where Python meets it: `field` gives the page a var bound to
one field of the engine's view (a React hook that re-renders only the
components reading that field when it changes), and `action` gives an event
handler that calls one of the engine's methods in the browser.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
from typing import Any

import reflex as rx
from reflex.event import EventChain
from reflex.vars import FunctionStringVar, FunctionVar, VarData
from reflex.vars.function import ArgsFunctionOperation
from reflex_base.utils.imports import ImportVar

ENGINE = "$/public/fleetchat.js"
MAX_NAME = 32
MAX_ROOM = 64
MAX_TEXT = 4000
QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "👀", "✅"]
"""The one-click reactions of a message's action bar (as in assets/fleetchat.js)."""


def backend_urls() -> list[str]:
    """The chat backends the browser tries, in turn, from CHAT_BACKEND_URL (comma-separated).

    Read when the page is built (`reflex run` builds at each start). Empty
    means the page's host name on port 8000; "/" means the page's own origin
    (a proxy in front routes /socket.io/ and /api/ to the fleet).
    """
    raw = os.environ.get("CHAT_BACKEND_URL", "")
    return [url.strip().rstrip("/") or "/" for url in raw.split(",") if url.strip()]


@dataclasses.dataclass
class Reaction:
    """One emoji under a message: how many gave it, and whether this user did."""

    emoji: str
    count: int
    mine: bool


@dataclasses.dataclass
class ChatLine:
    """One message as the page shows it (built by the engine)."""

    key: str
    id: str
    user: str
    text: str
    """"message deleted" for a tombstone."""
    time: str
    own: bool
    mention: bool
    pending: bool
    guest: bool
    edited: bool
    deleted: bool
    reactions: list[Reaction]
    has_reply: bool
    reply_user: str
    reply_text: str
    can_edit: bool
    can_delete: bool
    editing: bool
    first_unread: bool
    seen: bool
    """The first message after the user's read mark when the room was opened: a "New messages" line above it."""


@dataclasses.dataclass
class Member:
    """Someone in the room on screen (built by the engine)."""

    name: str
    guest: bool


@dataclasses.dataclass
class RoomInfo:
    """A room in the directory (built by the engine)."""

    name: str
    label: str
    """What the list shows: the room's name, or for a DM the other person's."""
    members: int
    unread: int
    joined: bool
    current: bool
    private: bool
    dm: bool


@dataclasses.dataclass
class Segment:
    """A piece of a search hit's text; ``match``: one of the words searched for."""

    text: str
    match: bool


@dataclasses.dataclass
class SearchResult:
    """One search hit as the results panel shows it (built by the engine)."""

    key: str
    room: str
    id: str
    user: str
    time: str
    segments: list[Segment]


def field(name: str, type_: Any) -> rx.Var:
    """A var holding one field of the engine's view."""
    local = f"fleetchat_{name}"
    return rx.Var(
        _js_expr=local,
        _var_data=VarData(
            imports={ENGINE: [ImportVar(tag="useChatField")]},
            hooks={f"const {local} = useChatField({name!r})": None},
        ),
    ).to(type_)


def action(method: str, *args: Any) -> rx.Var:
    """An event handler that calls `chat.<method>(*args)` in the browser."""
    engine = rx.Var(_js_expr="chat", _var_data=VarData(imports={ENGINE: [ImportVar(tag="chat")]}))
    call = FunctionStringVar(_js_expr=f"{engine}.{method}.bind({engine})", _var_data=engine._get_all_var_data())
    return ArgsFunctionOperation.create((), call.call(*args)).to(FunctionVar, EventChain)


# Reflex 0.10.1's page opens a socket to its own server for every tab (to hydrate
# server state) unless a `backend-enabled=false` cookie is set (utils/state.js,
# isBackendDisabled: its switch for pages served without a backend). This page
# has no server state, so that socket would only cost the UI server ~200 KB per
# tab (bench/README.md, scenario e). The script sets the cookie before any module
# runs; the engine clears it once the page has mounted (assets/fleetchat.js), so
# it never reaches another Reflex app on the same host. Applied only to the
# Reflex version it was read from; tests/e2e/test_chat.py fails when it stops working.
REFLEX_SOCKET_SWITCH_VERSION = "0.10.1"
NO_SOCKET_JS = "document.cookie = 'backend-enabled=false; path=/; SameSite=Lax';"


def no_reflex_socket() -> rx.Component:
    """The page's head script that keeps Reflex from opening its own socket per tab."""
    installed = importlib.metadata.version("reflex")
    if installed != REFLEX_SOCKET_SWITCH_VERSION:
        logging.getLogger(__name__).warning(
            "reflex %s is not %s: each tab keeps a socket to the UI server (frontend/chat.py)",
            installed,
            REFLEX_SOCKET_SWITCH_VERSION,
        )
        return rx.fragment()
    return rx.el.script(custom_attrs={"dangerouslySetInnerHTML": {"__html": NO_SOCKET_JS}})


class FleetchatClient(rx.Component):
    """Mounted once per page: starts the tab's connection to the chat fleet."""

    library = ENGINE
    tag = "FleetchatClient"
    urls: rx.Var[list[str]]


# The view, field by field (assets/fleetchat.js, computeView).
named = field("named", bool)
name = field("name", str)
guest = field("guest", bool)
auth_error = field("auth_error", str)
auth_busy = field("auth_busy", bool)
show_signup = field("show_signup", bool)
room = field("room", str)
can_leave = field("can_leave", bool)
status = field("status", str)
backend = field("backend", str)
form_error = field("form_error", str)
send_error = field("send_error", str)
lines = field("lines", list[ChatLine])
members = field("members", list[Member])
typing_text = field("typing_text", str)
directory = field("directory", list[RoomInfo])
dms = field("dms", list[RoomInfo])
room_title = field("room_title", str)
room_private = field("room_private", bool)
can_invite = field("can_invite", bool)
invite_status = field("invite_status", str)
receipts = field("receipts", bool)
"""Whether this browser sends read receipts in DMs."""
has_older = field("has_older", bool)
loading_older = field("loading_older", bool)
sidebar_open = field("sidebar_open", bool)
replying = field("replying", str)
"""The message the next one answers, as "name: text", or empty."""
search_results = field("search_results", list[SearchResult])
searching = field("searching", bool)
search_error = field("search_error", str)
search_open = field("search_open", bool)
"""A search was made and its panel is shown (until a result is opened or it is closed)."""
