"""The HTTP API and the plain WebSocket bridge against a real embedded backend."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid

import orjson
import pytest
import websockets

from tests.support import async_wait_for, http_get, rooms_listed

ACCEL_MODES = ("on", "off")
"""Every test here runs with the fast path and with the stock libraries (``CHAT_ACCEL=off``)."""


def room() -> str:
    return "h-" + uuid.uuid4().hex[:12]


def post(url: str, body: object, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_readiness_openapi_and_metrics_answer(embedded):
    assert http_get(embedded.url + "/healthz")[0] == 200
    assert http_get(embedded.url + "/readyz")[0] == 200
    status, body = http_get(embedded.url + "/openapi.json")
    spec = json.loads(body)
    assert status == 200 and "/api/rooms/{room}/messages" in spec["paths"]
    status, body = http_get(embedded.url + "/metrics")
    assert status == 200 and b"fleetchat_connected_sockets" in body


async def test_a_message_posted_over_http_reaches_every_socket(embedded, clients):
    r = room()
    a = await clients(embedded.url, "a")
    await a.join(r)
    status, body = await asyncio.to_thread(
        post, f"{embedded.url}/api/rooms/{r}/messages", {"name": "curl", "text": "via http", "client_id": "h1"}
    )
    assert status == 201 and body["ok"] and body["seq"] == 1
    await async_wait_for(lambda: a.texts(r) == ["via http"], what="http post fan-out")
    assert a.messages(r)[0]["user"]["name"] == "curl"
    status, again = await asyncio.to_thread(
        post, f"{embedded.url}/api/rooms/{r}/messages", {"name": "curl", "text": "via http", "client_id": "h1"}
    )
    assert again["id"] == body["id"]


async def test_rooms_list_counts_members_and_history_pages_over_http(embedded, clients):
    r = room()
    a = await clients(embedded.url, "a")
    b = await clients(embedded.url, "b")
    await a.join(r)
    await b.join(r)
    for i in range(7):
        await a.send(r, f"m{i}")
    # The directory may be up to a second old (backend/chat.py, DIRECTORY_TTL).
    await async_wait_for(lambda: {"name": r, "members": 2} in rooms_listed(embedded.url), what="the room listed")
    assert any(x["name"] == "general" for x in rooms_listed(embedded.url))
    page = json.loads(http_get(f"{embedded.url}/api/rooms/{r}/messages?limit=3")[1])
    assert [m["text"] for m in page["messages"]] == ["m4", "m5", "m6"] and page["more"]
    older = json.loads(
        http_get(f"{embedded.url}/api/rooms/{r}/messages?limit=10&before={page['messages'][0]['id']}")[1]
    )
    assert [m["text"] for m in older["messages"]] == ["m0", "m1", "m2", "m3"] and not older["more"]


@pytest.mark.parametrize(
    ("path", "body", "raw", "status", "code"),
    [
        ("/api/rooms/general/messages", {"name": "x"}, None, 400, "bad_request"),
        ("/api/rooms/general/messages", {"name": "x", "text": 5}, None, 400, "bad_request"),
        ("/api/rooms/general/messages", None, b"{not json", 400, "bad_request"),
        ("/api/rooms/general/messages", {"text": "no name"}, None, 400, "bad_request"),
        ("/api/rooms/Bad Room/messages", {"name": "x", "text": "y"}, None, 400, "bad_request"),
        ("/api/rooms/no-such-room-here/messages", {"name": "x", "text": "y"}, None, 404, "not_found"),
        ("/api/rooms/general/messages", {"name": "x", "text": "y" * 4001}, None, 413, "too_large"),
    ],
)
def test_bad_http_posts_get_a_4xx_json_error(embedded, path, body, raw, status, code):
    got_status, got = post(embedded.url + path.replace(" ", "%20"), body, raw)
    assert got_status == status and got["ok"] is False and got["error"] == code, got


def test_unknown_room_and_bad_query_are_4xx(embedded):
    assert http_get(embedded.url + "/api/rooms/nope-nope-nope/messages")[0] == 404
    assert http_get(embedded.url + "/api/rooms/general/messages?limit=0")[0] == 400
    assert http_get(embedded.url + "/api/rooms/general/messages?before=xyz")[0] == 400
    assert http_get(embedded.url + "/no/such/route")[0] == 404


async def test_plain_websocket_bridge_works_both_ways(embedded, clients):
    r = room()
    sio_user = await clients(embedded.url, "sio-user")
    await sio_user.join(r)
    await sio_user.send(r, "before the bridge joined")
    ws_url = embedded.url.replace("http", "ws") + f"/ws?room={r}&name=bare"
    async with websockets.connect(ws_url) as ws:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["text"] == "before the bridge joined"  # history first
        await ws.send("hello from a bare websocket")
        await async_wait_for(lambda: "hello from a bare websocket" in sio_user.texts(r), what="bridge -> socket.io")
        assert sio_user.messages(r)[-1]["user"]["name"] == "bare"
        echoed = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert echoed["text"] == "hello from a bare websocket"
        await sio_user.send(r, "to the bridge")
        got = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert got["text"] == "to the bridge" and got["user"]["name"] == "sio-user"
        members = (await sio_user.call("join", {"room": r}))["members"]
        assert {m["name"] for m in members} == {"sio-user", "bare"}


async def test_bridge_refuses_a_bad_room_with_an_error_frame(embedded):
    async with websockets.connect(embedded.url.replace("http", "ws") + "/ws?room=BAD%20ROOM&name=x") as ws:
        err = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert err["ok"] is False and err["error"] == "bad_request"


async def test_history_survives_a_backend_restart(backends, clients):
    backend = backends()
    r = room()
    a = await clients(backend.url, "a")
    await a.join(r)
    acks = [await a.send(r, f"kept {i}") for i in range(3)]
    await a.close()
    assert backend.terminate() == 0
    backend.start()
    b = await clients(backend.url, "b")
    ack = await b.join(r)
    assert [m["text"] for m in ack["history"]] == ["kept 0", "kept 1", "kept 2"]
    assert ack["history"][-1]["id"] == acks[-1]["id"]
    assert (await b.send(r, "after restart"))["seq"] == 4
