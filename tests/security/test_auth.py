"""Signed tokens: with CHAT_AUTH_SECRET every transport needs an HS256 JWT
naming the user; without it anonymous names work as before."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid

import jwt
import orjson
import pytest
import websockets

from backend.auth import mint
from tests.security.helpers import SECRET, request, try_connect
from tests.support import ROOT, Backend, async_wait_for


def room() -> str:
    return "a-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def secured():
    backend = Backend(env={"CHAT_AUTH_SECRET": SECRET, "CHAT_RATE": "1000", "CHAT_RATE_BURST": "1000"}).start()
    yield backend
    backend.kill()


def token(name: str = "alice", sub: str = "user-1", ttl: float = 600, secret: str = SECRET, **extra: object) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "name": name, "iat": now, "exp": now + int(ttl), **extra}, secret, "HS256")


BAD_TOKENS = {
    "missing": None,
    "empty": "",
    "not a string": 12345,
    "garbage": "not.a.jwt",
    "wrong secret": token(secret="another-secret-of-at-least-32-bytes!!"),
    "expired": token(ttl=-3600),
    "alg none": jwt.encode({"sub": "u", "name": "n", "exp": int(time.time()) + 600}, None, "none"),
    "no exp": jwt.encode({"sub": "u", "name": "n"}, SECRET, "HS256"),
    "no sub": jwt.encode({"name": "n", "exp": int(time.time()) + 600}, SECRET, "HS256"),
    "bad name": token(name="x" * 40),
    "no name": jwt.encode({"sub": "u", "exp": int(time.time()) + 600}, SECRET, "HS256"),
    "HS512": jwt.encode({"sub": "u", "name": "n", "exp": int(time.time()) + 600}, SECRET, "HS512"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_a_connect_without_a_valid_token_is_refused_with_a_clear_connect_error(secured, case):
    auth = {"name": "alice"} if BAD_TOKENS[case] is None else {"name": "alice", "token": BAD_TOKENS[case]}
    refusal = await try_connect(secured.url, auth)
    assert isinstance(refusal, dict), refusal
    assert refusal["data"]["ok"] is False and refusal["data"]["error"] == "unauthorized"
    assert refusal["message"] == refusal["data"]["detail"] and refusal["message"]
    if case == "expired":
        assert refusal["message"] == "token expired"


async def test_the_token_not_the_auth_name_says_who_speaks(secured):
    r = room()
    alice = await try_connect(secured.url, {"token": token("alice", "user-1"), "name": "mallory"})
    other = await try_connect(secured.url, {"token": token("alice", "user-2")})
    seen: list[dict] = []
    other.on("message", seen.append)
    try:
        ack = await alice.call("join", {"room": r})
        assert ack["members"] == [{"id": "user-1", "name": "alice"}]
        ack = await other.call("join", {"room": r})
        # Same display name, different users: both listed, told apart by id.
        assert sorted(m["id"] for m in ack["members"]) == ["user-1", "user-2"]
        assert (await alice.call("message", {"room": r, "text": "hi", "user": {"id": "user-2", "name": "x"}}))["ok"]
        await async_wait_for(lambda: seen, what="message")
        assert seen[0]["user"] == {"id": "user-1", "name": "alice"}
    finally:
        await alice.disconnect()
        await other.disconnect()


def test_http_post_needs_a_bearer_token_and_takes_the_user_from_it(secured):
    url = secured.url + "/api/rooms/general/messages"
    status, _, body = request(url, "POST", {"name": "alice", "text": "no token"})
    assert status == 401 and body["error"] == "unauthorized"
    status, _, body = request(url, "POST", {"text": "bad"}, {"Authorization": "Bearer " + BAD_TOKENS["wrong secret"]})
    assert status == 401 and body["error"] == "unauthorized"
    status, _, body = request(url, "POST", {"text": "basic"}, {"Authorization": "Basic YWxpY2U6eA=="})
    assert status == 401
    status, _, body = request(
        url, "POST", {"name": "spoofed", "text": "signed"}, {"Authorization": "Bearer " + token("carol", "user-3")}
    )
    assert status == 201 and body["ok"], body
    page = request(secured.url + "/api/rooms/general/messages?limit=1")[2]
    assert page["messages"][-1]["user"] == {"id": "user-3", "name": "carol"}


async def test_the_ws_bridge_takes_the_token_from_the_query(secured):
    base = secured.url.replace("http", "ws") + "/ws?room=general"
    async with websockets.connect(base + "&name=alice") as ws:
        refusal = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert refusal["error"] == "unauthorized"
    async with websockets.connect(base + "&token=" + token("dave", "user-4")) as ws:
        await ws.send("hello signed bridge")
        for _ in range(200):
            got = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            if got.get("text") == "hello signed bridge":
                assert got["user"] == {"id": "user-4", "name": "dave"}
                break
        else:
            raise AssertionError("the bridge never echoed the message")


def test_mint_cli_prints_a_token_the_backend_accepts():
    env = {**os.environ, "CHAT_AUTH_SECRET": SECRET}
    out = subprocess.run(
        [sys.executable, "-m", "backend.auth", "mint", "erin", "--sub", "user-5", "--ttl", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    claims = jwt.decode(out, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "user-5" and claims["name"] == "erin" and 0 < claims["exp"] - time.time() <= 61
    env.pop("CHAT_AUTH_SECRET")
    missing = subprocess.run(
        [sys.executable, "-m", "backend.auth", "mint", "erin"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "CHAT_AUTH_SECRET" in missing.stderr
    assert mint(SECRET, "frank").count(".") == 2


async def test_without_a_secret_anonymous_names_still_work_and_tokens_are_not_needed(embedded, clients):
    r = room()
    a = await clients(embedded.url, "anon-a")
    assert (await a.join(r))["members"] == [{"id": "anon:anon-a", "name": "anon-a", "guest": True}]
    status, _, body = request(embedded.url + f"/api/rooms/{r}/messages", "POST", {"name": "curl", "text": "hi"})
    assert status == 201 and body["ok"]
