"""The CHAT_CORS_ORIGINS allow-list on every surface: Socket.IO (both
transports), the /ws bridge and the HTTP API. No Origin header (curl, a
server-side client) stays allowed."""

from __future__ import annotations

import asyncio

import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.security.helpers import request, try_connect
from tests.support import Backend

GOOD = "https://chat.example"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def guarded():
    backend = Backend(env={"CHAT_CORS_ORIGINS": f"{GOOD},http://localhost:3000"}).start()
    yield backend
    backend.kill()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_socketio_admits_listed_and_headerless_origins_only(guarded, transport):
    for headers in ({"Origin": GOOD}, {}):
        client = await try_connect(guarded.url, {"name": "ok"}, headers, transport)
        assert not isinstance(client, dict | str), client
        assert (await client.call("join", {"room": "general"}))["ok"]
        await client.disconnect()
    if transport == "websocket":
        refused = await try_connect(guarded.url, {"name": "evil"}, {"Origin": EVIL}, transport)
        assert isinstance(refused, str | dict), "a disallowed origin connected"
    handshake = guarded.url + "/socket.io/?EIO=4&transport=" + transport
    status, headers, _ = request(handshake, headers={"Origin": EVIL})
    assert status == 400 and "access-control-allow-origin" not in headers
    if transport == "polling":
        status, headers, _ = request(handshake, headers={"Origin": GOOD})
        assert status == 200 and headers["access-control-allow-origin"] == GOOD


async def test_the_ws_bridge_refuses_a_disallowed_origin_before_the_upgrade(guarded):
    url = guarded.url.replace("http", "ws") + "/ws?room=general&name=bare"
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, origin=EVIL):
            pass
    assert info.value.response.status_code == 403
    for origin in (GOOD, None):
        async with websockets.connect(url, origin=origin) as ws:
            await ws.send("allowed origin " + str(origin))
            got = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            assert "ok" not in got or got["ok"] is not False, got


def test_http_api_sends_cors_headers_only_to_listed_origins(guarded):
    status, headers, _ = request(guarded.url + "/api/rooms", headers={"Origin": GOOD})
    assert status == 200 and headers["access-control-allow-origin"] == GOOD and "Origin" in headers["vary"]
    status, headers, _ = request(guarded.url + "/api/rooms", headers={"Origin": EVIL})
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = request(guarded.url + "/api/rooms")
    assert status == 200 and "access-control-allow-origin" not in headers


def test_preflight_answers_listed_origins_and_refuses_others(guarded):
    url = guarded.url + "/api/rooms/general/messages"
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, authorization"}
    status, headers, _ = request(url, "OPTIONS", headers={"Origin": GOOD, **ask})
    assert status == 204 and headers["access-control-allow-origin"] == GOOD
    assert "POST" in headers["access-control-allow-methods"]
    assert "authorization" in headers["access-control-allow-headers"]
    status, headers, body = request(url, "OPTIONS", headers={"Origin": EVIL, **ask})
    assert status == 403 and "access-control-allow-origin" not in headers and body["error"] == "forbidden_origin"


def test_cross_origin_posts_from_disallowed_origins_change_nothing(guarded):
    url = guarded.url + "/api/rooms/general/messages"
    before = request(url + "?limit=1")[2]["messages"]
    status, _, body = request(url, "POST", {"name": "csrf", "text": "forged"}, {"Origin": EVIL})
    assert status == 403 and body["error"] == "forbidden_origin"
    assert request(url + "?limit=1")[2]["messages"] == before
    status, headers, body = request(url, "POST", {"name": "ui", "text": "from the UI"}, {"Origin": GOOD})
    assert status == 201 and headers["access-control-allow-origin"] == GOOD
    status, _, body = request(url, "POST", {"name": "curl", "text": "no origin header"})
    assert status == 201
