"""Socket.IO handlers: authenticate on connect, then map each event to ``Chat``.

Every handler answers through its ack; nothing a client sends raises out of
here, so a bad payload never disconnects the socket or reaches anyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from backend import accel, logs
from backend.chat import Chat
from backend.limits import client_address
from backend.models import ChatError
from backend.store.base import StoreUnavailable

log = logging.getLogger(__name__)

Action = Callable[[str, Any], Awaitable[dict[str, Any]]]


def register(sio: socketio.AsyncServer, chat: Chat) -> None:
    @sio.on("connect")
    @logs.logged_connection
    async def connect(sid: str, environ: Any = None, auth: Any = None, *extra: Any) -> Any:
        if sid in chat.connections or not isinstance(environ, dict) or extra:
            return _reserved("connect")  # an event a client emitted, not a new connection
        try:
            await chat.admit(_address(chat, environ))
            assert chat.identity is not None
            user, session = await chat.identity.connect(auth)
        except StoreUnavailable:
            exc = ChatError("unavailable", "accounts are unreachable right now, retry shortly", 503)
            chat.metrics.connections_refused.labels(exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(exc.detail, exc.ack()) from None
        except ChatError as exc:
            chat.metrics.connections_refused.labels(exc.code).inc()
            raise socketio.exceptions.ConnectionRefusedError(exc.detail, exc.ack()) from None
        chat.open_connection(sid, user, session)
        await sio.enter_room(sid, chat.mention_room_of(user))
        await sio.enter_room(sid, chat.user_room_of(user))

    @sio.on("disconnect")
    @logs.with_sid
    async def disconnect(sid: str, reason: Any = None, *extra: Any) -> Any:
        if sio.manager.is_connected(sid, "/"):
            return _reserved("disconnect")  # emitted by a client that is still connected
        await chat.close_connection(sid)
        logs.log.info("socket disconnected", extra={"reason": None if reason is None else str(reason)})
        return None

    def _reserved(name: str) -> dict[str, Any]:
        chat.metrics.refused.labels("unknown_event").inc()
        return {"ok": False, "error": "unknown_event", "detail": f"{name!r} is reserved and cannot be emitted"}

    dispatch_event = sio._handle_event

    async def checked_event(eio_sid: str, namespace: str, id: Any, data: Any) -> Any:
        # python-socketio looks the name up in a dict in a background task:
        # a name that is not a string would raise there, out of our reach.
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise ValueError("an event is a list starting with its name")
        return await dispatch_event(eio_sid, namespace, id, data)

    sio._handle_event = checked_event
    decode_and_dispatch = sio._handle_eio_message

    async def guarded(eio_sid: str, data: Any) -> None:
        # python-socketio raises out of here on a packet that does not parse as
        # Socket.IO (and engine.io logs a traceback per packet). Drop such a
        # client instead, as the reference socket.io server does on a parse error.
        sock = sio.eio.sockets.get(eio_sid)
        if sock is None or sock.closed:
            return  # sent after we closed it, before its WebSocket went away
        try:
            await decode_and_dispatch(eio_sid, data)
        except Exception as exc:
            chat.metrics.connections_refused.labels("malformed_packet").inc()
            log.warning("dropping a connection that sent a malformed packet (%s: %.80s)", type(exc).__name__, exc)
            await sio.eio.disconnect(eio_sid)
            # engine.io then waits for the client to hang up; a hostile one never does.
            accel.hang_up(sock)

    sio.eio.on("message", guarded)

    def handler(action: Action) -> Callable[..., Awaitable[dict[str, Any]]]:
        @logs.with_sid
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

    for name in (
        *("join", "leave", "message", "typing", "history"),
        *("edit", "delete", "react", "read", "search"),
        *("create", "invite", "kick", "dm"),
    ):
        sio.on(name, handler(getattr(chat, name)))

    @sio.on("*")
    async def unknown(event: str, sid: str, *args: Any) -> dict[str, Any]:
        return await _unknown(sid, event)

    @logs.with_sid
    async def _unknown(sid: str, event: Any) -> dict[str, Any]:
        chat.metrics.refused.labels("unknown_event").inc()
        return {"ok": False, "error": "unknown_event", "detail": f"no such event: {str(event)[:64]!r}"}


def _address(chat: Chat, environ: dict[str, Any]) -> str:
    # python-engineio's ASGI environ has a fixed REMOTE_ADDR; the scope has the peer.
    client = environ.get("asgi.scope", {}).get("client") or ("unknown", 0)
    return client_address(client[0], environ.get("HTTP_X_FORWARDED_FOR"), chat.settings.trusted_proxy_set)
