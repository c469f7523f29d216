"""Socket.IO handlers: authenticate on connect, then map each event to ``Chat``.

Every handler answers through its ack; nothing a client sends raises out of
here, so a bad payload never disconnects the socket or reaches anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from backend.auth import authenticate
from backend.chat import Chat
from backend.limits import client_address
from backend.models import ChatError

log = logging.getLogger(__name__)

Action = Callable[[str, Any], Awaitable[dict[str, Any]]]


def register(sio: socketio.AsyncServer, chat: Chat) -> None:
    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            await chat.admit(_address(chat, environ))
            user = authenticate(chat.settings, auth)
        except ChatError as exc:
            chat.metrics.connections_refused.labels(exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(exc.detail, exc.ack()) from None
        chat.open_connection(sid, user)
        await sio.enter_room(sid, chat.mention_room_of(user))

    @sio.event
    async def disconnect(sid: str, reason: Any = None) -> None:
        await chat.close_connection(sid)

    def handler(action: Action) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def handle(sid: str, *args: Any) -> dict[str, Any]:
            if len(args) != 1:
                return ChatError("bad_request", "expected exactly one payload object").ack()
            try:
                return await action(sid, args[0])
            except ChatError as exc:
                chat.metrics.refused.labels(exc.code).inc()
                return exc.ack()
            except Exception:
                log.exception("unexpected error in %s", getattr(action, "__name__", action))
                return {"ok": False, "error": "internal", "detail": "internal error, the request was not applied"}

        return handle

    for name in ("join", "leave", "message", "typing", "history"):
        sio.on(name, handler(getattr(chat, name)))

    @sio.on("*")
    async def unknown(event: str, sid: str, *args: Any) -> dict[str, Any]:
        chat.metrics.refused.labels("unknown_event").inc()
        return {"ok": False, "error": "unknown_event", "detail": f"no such event: {str(event)[:64]!r}"}


def _address(chat: Chat, environ: dict[str, Any]) -> str:
    # python-engineio's ASGI environ has a fixed REMOTE_ADDR; the scope has the peer.
    client = environ.get("asgi.scope", {}).get("client") or ("unknown", 0)
    return client_address(client[0], environ.get("HTTP_X_FORWARDED_FOR"), chat.settings.trusted_proxy_set)
