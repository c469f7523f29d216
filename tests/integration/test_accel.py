"""The fast path (backend/accel/) seen from outside, with it on and with ``CHAT_ACCEL=off``:
its state on /metrics and /readyz, a browser-shaped client that offers
permessage-deflate, and the chat (join, message, history, typing, edit) over
websocket and long-polling either way."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets

from backend import accel
from tests.support import ChatClient, async_wait_for, http_get, metric, scrape

pytestmark = pytest.mark.timeout(120)

ACCEL_MODES = ("on", "off")


def room() -> str:
    return "accel-" + uuid.uuid4().hex[:10]


def mode(backend: Any) -> str:
    return backend.env["CHAT_ACCEL"]


def test_metrics_and_readyz_show_every_cut_and_whether_it_applied(embedded):
    applied = 1.0 if mode(embedded) == "on" else 0.0
    status, body = http_get(embedded.url + "/metrics", 5)
    assert status == 200
    for cut in accel.CUTS:
        assert f'fleetchat_accel_applied{{cut="{cut.name}"}}' in body.decode(), cut.name
        assert metric(body.decode(), "fleetchat_accel_applied", cut=cut.name) == applied, cut.name
    status, body = http_get(embedded.url + "/readyz", 5)
    assert status == 200
    ready = json.loads(body)
    assert ready["ok"] is True
    assert [c["cut"] for c in ready["accel"]] == [cut.name for cut in accel.CUTS]
    assert all(c["applied"] is (mode(embedded) == "on") for c in ready["accel"]), ready["accel"]
    assert all(c["versions"] == cut.requires for c, cut in zip(ready["accel"], accel.CUTS, strict=True))


async def _until(ws: Any, prefix: str) -> str:
    """The next Engine.IO text packet starting with ``prefix``, answering pings meanwhile."""
    while True:
        packet = await asyncio.wait_for(ws.recv(), 10)
        if packet == "2":
            await ws.send("3")
        elif packet.startswith(prefix):
            return packet


async def test_a_browser_shaped_client_offering_deflate_gets_no_extension_and_chats(embedded, clients):
    r = room()
    listener = await clients(embedded.url, "listener")
    await listener.join(r)
    url = embedded.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    # websockets offers permessage-deflate by default, as Chromium does
    async with websockets.connect(url, compression="deflate") as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
        if mode(embedded) == "on":
            assert extensions is None, extensions  # decline_deflate
            await async_wait_for(lambda: scrape(embedded.url, "fleetchat_lean_websockets") >= 1, what="hand-off")
        else:
            assert extensions is not None and "permessage-deflate" in extensions  # stock hypercorn accepts it
        assert (await _until(ws, "0")).startswith("0{")
        await ws.send("40" + json.dumps({"name": "browser"}))
        assert (await _until(ws, "40")).startswith('40{"sid":')
        await ws.send("420" + json.dumps(["join", {"room": r}]))
        join = json.loads((await _until(ws, "430"))[3:])[0]
        assert join["ok"], join
        message = {"room": r, "text": "compressed?", "client_id": uuid.uuid4().hex}
        await ws.send("421" + json.dumps(["message", message]))
        ack = json.loads((await _until(ws, "431"))[3:])[0]
        assert ack["ok"], ack
        event = json.loads((await _until(ws, '42["message"'))[2:])
        assert event[1]["text"] == "compressed?"
    await async_wait_for(lambda: "compressed?" in listener.texts(r), what="delivery to the other client")


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], ["polling", "websocket"]], ids="+".join)
async def test_join_message_history_typing_and_edit(embedded, transports):
    r = room()
    alice = ChatClient(embedded.url, "alice")
    bob = ChatClient(embedded.url, "bob")
    await alice.connect(transports=transports)
    await bob.connect(transports=transports)
    try:
        await alice.join(r)
        await bob.join(r)
        sent = await alice.send(r, "helo")
        assert sent["ok"], sent
        await async_wait_for(lambda: bob.texts(r) == ["helo"], what="delivery")
        assert (await bob.call("typing", {"room": r, "typing": True}))["ok"]
        await async_wait_for(lambda: alice.events["typing"], what="typing event")
        edit = await alice.call("edit", {"room": r, "id": sent["id"], "text": "hello"})
        assert edit["ok"] and edit["message"]["text"] == "hello", edit
        await async_wait_for(lambda: [u for u in bob.events["update"] if u["id"] == sent["id"]], what="the update")
        history = await bob.call("history", {"room": r})
        assert history["ok"] and [m["text"] for m in history["messages"]] == ["hello"], history
    finally:
        await alice.close()
        await bob.close()
