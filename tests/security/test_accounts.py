"""Accounts and sign-in: sign-up, login, logout, guests, on every transport and across the fleet."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import urllib.parse
import uuid
from pathlib import Path

import jwt
import orjson
import pytest
import websockets

from tests.security.helpers import request, try_connect
from tests.support import ROOT, Backend

PASSWORD = "correct horse battery"


def room() -> str:
    return "acct-" + uuid.uuid4().hex[:10]


def username() -> str:
    return "u" + uuid.uuid4().hex[:10]


def signup(url: str, name: str, password: str = PASSWORD, **extra: str) -> tuple[int, dict]:
    status, _, body = request(f"{url}/api/auth/signup", "POST", {"username": name, "password": password, **extra})
    return status, body


def login(
    url: str, name: str, password: str = PASSWORD, headers: dict[str, str] | None = None
) -> tuple[int, dict, dict]:
    status, got, body = request(f"{url}/api/auth/login", "POST", {"username": name, "password": password}, headers)
    return status, got, body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def embedded_accounts():
    backend = Backend(env={"CHAT_RATE": "1000", "CHAT_RATE_BURST": "1000"}).start()
    yield backend
    backend.kill()


def test_sign_up_then_the_token_works_on_every_transport(embedded_accounts):
    url, name = embedded_accounts.url, username()
    status, body = signup(url, name, display_name="Ada Lovelace")
    assert status == 201, body
    assert body["user"]["username"] == name and body["user"]["name"] == "Ada Lovelace"
    assert body["user"]["id"].startswith("u_")
    token = body["token"]

    status, _, me = request(f"{url}/api/me", headers=bearer(token))
    assert status == 200 and me["user"]["id"] == body["user"]["id"] and me["user"]["username"] == name

    async def over_socketio() -> dict:
        client = await try_connect(url, {"token": token})
        assert not isinstance(client, (dict, str)), client
        try:
            r = room()
            ack = await client.call("join", {"room": r})
            assert ack["members"] == [{"id": body["user"]["id"], "name": "Ada Lovelace", "username": name}]
            return await client.call("message", {"room": r, "text": "signed in", "client_id": "a1"})
        finally:
            await client.disconnect()

    assert asyncio.run(over_socketio())["ok"]
    status, _, posted = request(f"{url}/api/rooms/general/messages", "POST", {"text": "over http"}, bearer(token))
    assert status == 201, posted
    _, _, page = request(f"{url}/api/rooms/general/messages?limit=1")
    assert page["messages"][-1]["user"] == {"id": body["user"]["id"], "name": "Ada Lovelace", "username": name}


def test_usernames_are_unique_case_insensitively_and_must_be_slugs(embedded_accounts):
    url, name = embedded_accounts.url, username()
    assert signup(url, name)[0] == 201
    status, body = signup(url, name.upper())
    assert (status, body["error"]) == (409, "username_taken")
    for bad in ["a", "has space", "ünïcode", "-dash", "x" * 33, ""]:
        status, body = signup(url, bad)
        assert (status, body["error"]) == (400, "bad_request"), bad


@pytest.mark.parametrize("password", ["short", "1234567", "password123", "Password1", "qwerty123"])
def test_weak_passwords_are_refused(embedded_accounts, password):
    status, body = signup(embedded_accounts.url, username(), password)
    assert (status, body["error"]) == (400, "weak_password"), body


def test_the_password_is_stored_as_an_argon2id_hash(embedded_accounts):
    name = username()
    assert signup(embedded_accounts.url, name)[0] == 201
    db = sqlite3.connect(Path(embedded_accounts.db_dir) / "chat.db")
    try:
        (stored,) = db.execute("SELECT password_hash FROM accounts WHERE username = ?", (name,)).fetchone()
    finally:
        db.close()
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), stored
    assert PASSWORD not in stored


def test_unknown_user_and_wrong_password_get_the_same_answer(embedded_accounts):
    url, name = embedded_accounts.url, username()
    assert signup(url, name)[0] == 201
    assert login(url, name)[0] == 200
    unknown = login(url, username(), "whatever-password")
    wrong = login(url, name, "not the password")
    assert unknown[0] == wrong[0] == 401
    assert unknown[2] == wrong[2] == {"ok": False, "error": "invalid_credentials", "detail": unknown[2]["detail"]}


def test_twenty_failed_logins_are_answered_429_with_retry_after(embedded_accounts):
    url, name = embedded_accounts.url, username()
    assert signup(url, name)[0] == 201
    answers = [login(url, name, f"wrong password {i}")[0] for i in range(20)]
    assert answers[0] == 401 and 429 in answers
    status, headers, body = login(url, name)  # even the right password, until the window ends
    assert (status, body["error"]) == (429, "rate_limited")
    assert int(headers["retry-after"]) > 0


def test_a_guest_cannot_take_a_registered_username(embedded_accounts):
    url, name = embedded_accounts.url, username()
    assert signup(url, name)[0] == 201

    async def as_guest(guest_name: str) -> object:
        return await try_connect(url, {"name": guest_name})

    refusal = asyncio.run(as_guest(name.upper()))
    assert isinstance(refusal, dict) and refusal["data"]["error"] == "name_taken", refusal
    status, _, body = request(f"{url}/api/rooms/general/messages", "POST", {"name": name, "text": "impostor"})
    assert (status, body["error"]) == (409, "name_taken")

    async def a_guest_is_marked() -> dict:
        client = await as_guest("visitor " + uuid.uuid4().hex[:4])
        try:
            return await client.call("join", {"room": room()})
        finally:
            await client.disconnect()

    members = asyncio.run(a_guest_is_marked())["members"]
    assert members[0]["guest"] is True


def test_forged_and_unsigned_tokens_are_refused(embedded_accounts):
    url, name = embedded_accounts.url, username()
    status, body = signup(url, name)
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "some-other-secret-of-at-least-32-bytes", "HS256")
    unsigned = jwt.encode(claims, None, "none")
    for token in (forged, unsigned):
        status, _, me = request(f"{url}/api/me", headers=bearer(token))
        assert (status, me["error"]) == (401, "unauthorized")
        refusal = asyncio.run(try_connect(url, {"token": token}))
        assert isinstance(refusal, dict) and refusal["data"]["error"] == "unauthorized"


async def _ws_refusal(url: str, token: str) -> dict:
    ws_url = url.replace("http", "ws") + "/ws?room=general&token=" + urllib.parse.quote(token)
    async with websockets.connect(ws_url) as ws:
        return orjson.loads(await asyncio.wait_for(ws.recv(), 10))


def test_logout_refuses_the_token_everywhere_and_closes_its_sockets(embedded_accounts):
    url, name = embedded_accounts.url, username()
    token = signup(url, name)[1]["token"]

    async def scenario() -> None:
        client = await try_connect(url, {"token": token})
        assert not isinstance(client, (dict, str)), client
        ws = await websockets.connect(url.replace("http", "ws") + "/ws?room=general&token=" + urllib.parse.quote(token))
        gone = asyncio.Event()
        client.on("disconnect", lambda *_: gone.set())
        status, _, _ = await asyncio.to_thread(request, f"{url}/api/auth/logout", "POST", None, bearer(token))
        assert status == 204
        await asyncio.wait_for(gone.wait(), 10)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            for _ in range(100):
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        refusal = await try_connect(url, {"token": token})
        assert isinstance(refusal, dict) and refusal["data"]["error"] == "unauthorized", refusal
        assert (await _ws_refusal(url, token))["error"] == "unauthorized"

    asyncio.run(scenario())
    status, _, me = request(f"{url}/api/me", headers=bearer(token))
    assert (status, me["error"]) == (401, "unauthorized")
    status, _, body = request(f"{url}/api/rooms/general/messages", "POST", {"text": "after logout"}, bearer(token))
    assert (status, body["error"]) == (401, "unauthorized")


@pytest.mark.fleet
async def test_a_logout_on_one_instance_is_refused_and_disconnects_on_another(redis_server, backends):
    env = {"REDIS_URL": redis_server.url, "CHAT_RATE": "1000", "CHAT_RATE_BURST": "1000"}
    one, two = backends(env=env), backends(env=env)
    name = username()
    status, body = await asyncio.to_thread(signup, one.url, name)
    assert status == 201, body
    token = body["token"]
    # Signed up on one, signed in on the other: the fleet shares accounts and the signing secret.
    assert (await asyncio.to_thread(login, two.url, name))[0] == 200
    client = await try_connect(two.url, {"token": token})
    assert not isinstance(client, (dict, str)), client
    gone = asyncio.Event()
    client.on("disconnect", lambda *_: gone.set())
    status, _, _ = await asyncio.to_thread(request, f"{one.url}/api/auth/logout", "POST", None, bearer(token))
    assert status == 204
    await asyncio.wait_for(gone.wait(), 10)
    refusal = await try_connect(two.url, {"token": token})
    assert isinstance(refusal, dict) and refusal["data"]["error"] == "unauthorized"
    assert (await _ws_refusal(two.url, token))["error"] == "unauthorized"
    status, _, _ = await asyncio.to_thread(request, f"{two.url}/api/me", "GET", None, bearer(token))
    assert status == 401


@pytest.mark.fleet
async def test_failed_logins_are_counted_across_the_fleet(redis_server, backends):
    env = {"REDIS_URL": redis_server.url, "CHAT_LOGIN_FAILURES_PER_USER": "4"}
    one, two = backends(env=env), backends(env=env)
    name = username()
    assert (await asyncio.to_thread(signup, one.url, name))[0] == 201
    for url in (one.url, two.url, one.url, two.url):
        assert (await asyncio.to_thread(login, url, name, "wrong password!"))[0] == 401
    status, headers, _ = await asyncio.to_thread(login, two.url, name)
    assert status == 429 and int(headers["retry-after"]) > 0


def test_an_operator_creates_an_account_from_the_shell(tmp_path):
    db = tmp_path / "chat.db"

    def create(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backend.accounts", "create", *args, "--password-stdin"],
            cwd=ROOT,
            env={"CHAT_DB_PATH": str(db), "PATH": "/usr/bin:/bin"},
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = create("Operator", "--name", "The Operator")
    assert made.returncode == 0, made.stderr
    assert "created operator" in made.stdout
    again = create("operator")
    assert again.returncode == 1 and "taken" in again.stderr
    backend = Backend(env={"CHAT_DB_PATH": str(db)}, db_dir=str(tmp_path)).start()
    try:
        status, _, body = login(backend.url, "operator")
        assert status == 200 and body["user"]["name"] == "The Operator"
    finally:
        backend.kill()
