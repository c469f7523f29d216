"""The plain WebSocket bridge at ``/ws?room=...&name=...``.

For clients without Socket.IO, like the seed article's bare React client:
every text frame received is posted as a message from that user, every
message of the room is sent back as one JSON text frame (history first),
with ``"type": "message"``; a message's later changes come as ``"type":
"update"`` frames. A frame that is a JSON object with a ``type`` of
``message``, ``edit``, ``delete`` or ``react`` is that action (the Socket.IO
event's payload, with ``room`` implied) and is answered with ``"type": "ack"``.
Errors come back as ``{"ok": false, "error", "detail"}`` frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
from quart import Blueprint, current_app, websocket

from backend import origins
from backend.chat import Chat, Connection
from backend.limits import client_address
from backend.models import ChatError, DeleteRequest, EditRequest, JoinRequest, ReactRequest, SendRequest, parse
from backend.store.base import StoreUnavailable

bridge = Blueprint("bridge", __name__)

GOING_AWAY = "\x00going-away"
"""Queued by the drain on SIGTERM: close with 1001 so the client reconnects elsewhere."""
SIGNED_OUT = "\x00signed-out"
"""Queued when the token's session ends (logout): close with 1008, policy violation."""
QUEUE_LIMIT = 1000
"""A bridge client this many messages behind is disconnected, not buffered forever."""


@bridge.websocket("/ws")
async def ws_bridge() -> None:
    chat: Chat = current_app.extensions["fleetchat"]
    origin = websocket.headers.get("Origin")
    if not chat.settings.origin_allowed(origin):
        # Refused before the upgrade: the page of another site gets a plain 403.
        chat.metrics.connections_refused.labels("forbidden_origin").inc()
        return origins.forbidden(origin or "")
    await websocket.accept()
    try:
        address = client_address(
            websocket.remote_addr, websocket.headers.get("X-Forwarded-For"), chat.settings.trusted_proxy_set
        )
        await chat.admit(address)
        room = parse(JoinRequest, {"room": websocket.args.get("room", "general")}).room
        assert chat.identity is not None
        user, session = await chat.identity.connect(
            {"name": websocket.args.get("name", ""), "token": websocket.args.get("token")}
        )
    except StoreUnavailable:
        exc = ChatError("unavailable", "accounts are unreachable right now, retry shortly", 503)
        chat.metrics.connections_refused.labels(exc.code).inc()
        await websocket.send(orjson.dumps(exc.ack()).decode())
        await websocket.close(1011, exc.detail[:120])
        return
    except ChatError as exc:
        chat.metrics.connections_refused.labels(exc.code).inc()
        await websocket.send(orjson.dumps(exc.ack()).decode())
        await websocket.close(1008, exc.detail[:120])
        return

    sid = "ws:" + uuid.uuid4().hex
    conn = chat.open_connection(sid, user, session)
    outbox: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_LIMIT)

    def on_message(event: str, data: dict[str, Any]) -> None:
        try:
            outbox.put_nowait(_frame(event, data))
        except asyncio.QueueFull:
            outbox._queue.clear()  # type: ignore[attr-defined]  # too slow: drop and hang up
            outbox.put_nowait(None)

    def going_away() -> None:
        outbox._queue.clear()  # type: ignore[attr-defined]
        outbox.put_nowait(GOING_AWAY)

    def signed_out() -> None:
        outbox._queue.clear()  # type: ignore[attr-defined]
        outbox.put_nowait(SIGNED_OUT)

    chat.closers[sid] = signed_out

    drain = current_app.extensions.get("fleetchat_drain")
    if drain is not None:
        drain.bridge_closers[sid] = going_away
    try:
        try:
            history = await chat.bridge_join(sid, conn, room, on_message)
        except ChatError as exc:
            await websocket.send(orjson.dumps(exc.ack()).decode())
            await websocket.close(1011, exc.detail[:120])
            return
        for message in history:
            await websocket.send(_frame("message", message))
        writer = asyncio.create_task(_write(outbox))
        try:
            await _read(chat, conn, room)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
    finally:
        if drain is not None:
            drain.bridge_closers.pop(sid, None)
        chat.closers.pop(sid, None)
        chat.unsubscribe(room, on_message)
        await chat.close_connection(sid)  # leaves the room; copes with a store outage


def _frame(event: str, data: dict[str, Any]) -> str:
    return orjson.dumps({"type": event, **data}).decode()


ACTIONS = {"message", "edit", "delete", "react"}


async def _act(chat: Chat, conn: Connection, room: str, command: dict[str, Any]) -> dict[str, Any]:
    """A JSON command frame: the Socket.IO event of that name, in the bridge's room."""
    data = {**command, "room": room}
    kind = data.pop("type")
    if not conn.bucket.take():
        raise ChatError("rate_limited", "slow down", 429)
    if kind == "message":
        req = parse(SendRequest, data)
        return await chat.send(conn.user, room, req.text, req.client_id, req.reply_to)
    if kind == "edit":
        edit = parse(EditRequest, data)
        return await chat.change(conn.user, room, edit.id, "edit", edit.client_id, text=edit.text)
    if kind == "delete":
        delete = parse(DeleteRequest, data)
        return await chat.change(conn.user, room, delete.id, "delete", delete.client_id)
    react = parse(ReactRequest, data)
    return await chat.change(conn.user, room, react.id, "reaction", react.client_id, emoji=react.emoji, on=react.on)


def _command(text: str) -> dict[str, Any] | None:
    """The frame as a command, or None for plain text (the seed client's messages)."""
    if not text.startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict) and value.get("type") in ACTIONS:
        return value
    return None


async def _write(outbox: asyncio.Queue[str | None]) -> None:
    while (frame := await outbox.get()) is not None and frame is not GOING_AWAY and frame is not SIGNED_OUT:
        await websocket.send(frame)
    if frame is GOING_AWAY:
        await websocket.close(1001, "server shutting down: reconnect")
    elif frame is SIGNED_OUT:
        await websocket.close(1008, "signed out: this token's session has ended")
    else:
        await websocket.close(1008, "too slow: fell too far behind")


async def _read(chat: Chat, conn: Connection, room: str) -> None:
    while True:
        data = await websocket.receive()
        if len(data) > chat.settings.max_payload_bytes:
            await websocket.close(1009, "frame too large")
            return
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        command = _command(text)
        if command is not None:
            try:
                ack = await _act(chat, conn, room, command)
            except ChatError as exc:
                ack = exc.ack()
            await websocket.send(orjson.dumps({"type": "ack", **ack}).decode())
            continue
        try:
            req = parse(SendRequest, {"room": room, "text": text})
            if not conn.bucket.take():
                raise ChatError("rate_limited", "slow down", 429)
            await chat.send(conn.user, req.room, req.text, None)
        except ChatError as exc:
            await websocket.send(orjson.dumps(exc.ack()).decode())
