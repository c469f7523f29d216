"""Benchmark peer: the straightforward python-socketio implementation.

A python-socketio ``AsyncServer`` with ``AsyncRedisManager`` as an ASGI app,
run by hypercorn with its defaults. It implements the subset of fleetchat's
PROTOCOL.md that the load generator uses: connect with auth ``{name}``,
``join`` with ack, ``message`` broadcast to the room (sender included) with
ack ``{ok, id, seq, ts}``. ``seq``/``id`` come from a per-instance, per-room
counter (no shared store), as in the Node peer.

    PORT=8002 REDIS_URL=redis://127.0.0.1:6390/0 \
        PYTHONPATH=bench/peers/python-naive \
        hypercorn naive_peer:asgi --bind 127.0.0.1:8002
"""

import itertools
import os
import time

import socketio

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
INSTANCE = os.environ.get("PORT", "0")
MAX_TEXT = 4000

mgr = socketio.AsyncRedisManager(REDIS_URL)
sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr, cors_allowed_origins="*")
asgi = socketio.ASGIApp(sio)

_seqs: dict[str, int] = {}
_counter = itertools.count(1)


def _fail(error: str, detail: str) -> dict:
    return {"ok": False, "error": error, "detail": detail}


@sio.event
async def connect(sid, environ, auth):
    name = auth.get("name") if isinstance(auth, dict) else None
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 32:
        raise socketio.exceptions.ConnectionRefusedError("invalid name")
    await sio.save_session(sid, {"user": {"id": f"{INSTANCE}-{sid}", "name": name}})


@sio.event
async def join(sid, data):
    room = data.get("room") if isinstance(data, dict) else None
    if not isinstance(room, str) or not room:
        return _fail("bad_request", "room required")
    await sio.enter_room(sid, room)
    return {"ok": True, "room": room, "epoch": INSTANCE, "history": [], "members": []}


@sio.event
async def leave(sid, data):
    room = data.get("room") if isinstance(data, dict) else None
    if isinstance(room, str):
        await sio.leave_room(sid, room)
    return {"ok": True}


@sio.event
async def message(sid, data):
    if not isinstance(data, dict):
        return _fail("bad_request", "object expected")
    room, text = data.get("room"), data.get("text")
    if not isinstance(room, str) or not isinstance(text, str) or not room or not text:
        return _fail("bad_request", "room and text required")
    if len(text) > MAX_TEXT:
        return _fail("too_large", "text too long")
    if room not in sio.rooms(sid):
        return _fail("not_in_room", "join the room first")
    session = await sio.get_session(sid)
    seq = _seqs.get(room, 0) + 1
    _seqs[room] = seq
    ts = int(time.time() * 1000)
    msg_id = f"{ts:013d}-{INSTANCE}-{next(_counter)}"
    msg = {
        "id": msg_id,
        "seq": seq,
        "room": room,
        "user": session["user"],
        "text": text,
        "ts": ts,
        "client_id": data.get("client_id"),
    }
    await sio.emit("message", msg, room=room)
    return {"ok": True, "id": msg_id, "seq": seq, "ts": ts}
