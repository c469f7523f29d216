"""A long paste gets an answer, not a dropped connection: any packet up to the
cap (``CHAT_MAX_PAYLOAD_BYTES``, 1 MiB) reaches the handlers, so a text over
``CHAT_MAX_MESSAGE_CHARS`` is refused ``too_large`` and the same socket goes on
chatting, on every transport; only a packet beyond the cap closes (1009)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

import orjson
import pytest
import websockets

from backend.config import Settings
from tests.support import ChatClient, async_wait_for

CAP = Settings.model_fields["max_payload_bytes"].default
PASTE = "p" * 100_000  # a 100 KB paste: over the text limit, well under the cap
OVER_CAP = "o" * (CAP + 1)


def room() -> str:
    return "cap-" + uuid.uuid4().hex[:8]


def post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def paste_then_chat(client: ChatClient) -> None:
    r = room()
    await client.join(r)
    ack = await client.send(r, PASTE)
    assert ack["ok"] is False and ack["error"] == "too_large", ack
    assert client.sio.connected
    assert (await client.send(r, "after the paste"))["ok"]
    await async_wait_for(lambda: client.texts(r) == ["after the paste"], what="the normal message, and only it")


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_a_100kb_text_gets_too_large_and_the_socket_keeps_chatting(embedded, transports):
    client = await ChatClient(embedded.url, "paster").connect(transports=transports)
    try:
        await paste_then_chat(client)
    finally:
        await client.close()


async def test_a_100kb_text_gets_too_large_with_the_lean_path_off(backends):
    backend = backends(env={"CHAT_LEAN_WEBSOCKETS": "false"})
    client = await ChatClient(backend.url, "paster").connect()
    try:
        await paste_then_chat(client)
    finally:
        await client.close()


@pytest.mark.parametrize("transports", [["websocket"], ["polling"]], ids=["websocket", "polling"])
async def test_a_packet_over_the_cap_drops_only_its_sender(embedded, transports):
    r = room()
    big = await ChatClient(embedded.url, "big").connect(transports=transports)
    other = await ChatClient(embedded.url, "other").connect()
    try:
        await big.join(r)
        await other.join(r)
        await big.sio.emit("message", {"room": r, "text": OVER_CAP, "client_id": "over"})
        await async_wait_for(lambda: not big.sio.connected, what="the sender over the cap is dropped")
        assert (await other.send(r, "still here"))["ok"] and other.sio.connected
        await async_wait_for(lambda: other.texts(r) == ["still here"], what="nothing else was broadcast")
    finally:
        await big.close()
        await other.close()


async def test_a_socketio_packet_over_the_cap_closes_the_websocket_with_1009(embedded):
    """A browser-shaped client (the ``websockets`` library) on the Engine.IO websocket."""
    url = embedded.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, max_size=None) as ws:
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")
        await ws.send('40{"name":"raw"}')
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("40")
        r = room()
        await ws.send("420" + orjson.dumps(["join", {"room": r}]).decode())
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("430")
        await ws.send("421" + orjson.dumps(["message", {"room": r, "text": PASTE, "client_id": "a"}]).decode())
        reply = await asyncio.wait_for(ws.recv(), 5)
        assert reply.startswith("431") and json.loads(reply[3:])[0]["error"] == "too_large", reply[:200]
        await ws.send("422" + orjson.dumps(["message", {"room": r, "text": "short", "client_id": "b"}]).decode())
        replies = [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)]  # the broadcast and the ack
        assert any(p.startswith("432") and json.loads(p[3:])[0]["ok"] for p in replies), replies
        await ws.send("4" + OVER_CAP)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_the_ws_bridge_answers_a_100kb_text_and_closes_over_the_cap(embedded):
    r = room()
    url = embedded.url.replace("http", "ws") + f"/ws?room={r}&name=bridge"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(PASTE)
        refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert refused["ok"] is False and refused["error"] == "too_large", refused
        await ws.send("after the paste")
        echoed = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert echoed["text"] == "after the paste"
        await ws.send(OVER_CAP)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_http_post_answers_413_too_large_under_and_over_the_cap(embedded):
    url = f"{embedded.url}/api/rooms/general/messages"
    for text in (PASTE, OVER_CAP):
        body = orjson.dumps({"name": "curl", "text": text})
        status, reply = await asyncio.to_thread(post, url, body)
        assert status == 413 and reply["ok"] is False and reply["error"] == "too_large", (len(body), reply)
    status, reply = await asyncio.to_thread(post, url, orjson.dumps({"name": "curl", "text": "short"}))
    assert status == 201 and reply["ok"]
