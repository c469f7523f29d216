"""Private rooms and direct messages: who may do what, on every surface, embedded
and across a 2-instance fleet. Whoever is not a member gets ``forbidden`` (or, signed
out, ``unauthorized``) and learns nothing: no message, no presence, no room name."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.helpers import request, try_connect
from tests.support import ChatClient, async_wait_for, new_account


def room() -> str:
    return "priv-" + uuid.uuid4().hex[:10]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token}


@dataclass
class Cast:
    """One private room and everyone the matrix asks about."""

    room: str
    owner: ChatClient
    member: ChatClient
    outsider: ChatClient
    kicked: ChatClient
    guest: ChatClient
    tokens: dict[str, str]
    owner_message: str
    member_message: str
    signed_out_token: str


@pytest.fixture
async def cast(urls) -> Any:
    made: list[ChatClient] = []

    async def connect(url: str, account: dict | None = None, name: str = "") -> ChatClient:
        if account is None:
            client = ChatClient(url, name or "guest" + uuid.uuid4().hex[:6])
        else:
            client = ChatClient(url, account["user"]["username"], token=account["token"])
        made.append(await client.connect())
        return client

    accounts = {role: new_account(urls[0]) for role in ("owner", "member", "outsider", "kicked", "gone")}
    r = room()
    owner = await connect(urls[0], accounts["owner"])
    assert (await owner.call("create", {"room": r, "private": True})) == {"ok": True, "room": r, "private": True}
    await owner.join(r)
    for role in ("member", "kicked"):
        ack = await owner.call("invite", {"room": r, "user": accounts[role]["user"]["username"]})
        assert ack == {"ok": True}, ack
    member = await connect(urls[1], accounts["member"])
    kicked = await connect(urls[1], accounts["kicked"])
    await member.join(r)
    await kicked.join(r)
    owner_message = (await owner.send(r, "owner's secret"))["id"]
    member_message = (await member.send(r, "member's secret"))["id"]
    ack = await owner.call("kick", {"room": r, "user": accounts["kicked"]["user"]["username"]})
    assert ack == {"ok": True}, ack
    await async_wait_for(lambda: kicked.events["membership"], what="the kicked user hears of it")
    outsider = await connect(urls[1], accounts["outsider"])
    guest = await connect(urls[1])
    gone = accounts["gone"]
    assert request(urls[0] + "/api/auth/logout", "POST", None, bearer(gone["token"]))[0] == 204
    yield Cast(
        r,
        owner,
        member,
        outsider,
        kicked,
        guest,
        {role: a["token"] for role, a in accounts.items()},
        owner_message,
        member_message,
        gone["token"],
    )
    for client in made:
        await client.close()


def socket_calls(c: Cast, own_message: str) -> dict[str, tuple[str, dict]]:
    r = c.room
    return {
        "join": ("join", {"room": r}),
        "join since": ("join", {"room": r, "since": c.owner_message}),
        "history": ("history", {"room": r}),
        "typing": ("typing", {"room": r, "typing": True}),
        "message": ("message", {"room": r, "text": "hello?", "client_id": uuid.uuid4().hex}),
        "edit": ("edit", {"room": r, "id": own_message, "text": "changed"}),
        "react": ("react", {"room": r, "id": c.owner_message, "emoji": "👀"}),
        "delete": ("delete", {"room": r, "id": own_message}),
        "read": ("read", {"room": r, "seq": 1}),
        "invite": ("invite", {"room": r, "user": "nobody-at-all"}),
        "search": ("search", {"q": "secret", "room": r}),
    }


async def test_a_member_may_do_everything_a_member_does(urls, cast):
    fleet_without_database = urls[0] != urls[1]
    for surface, (event, payload) in socket_calls(cast, cast.member_message).items():
        ack = await cast.member.call(event, payload)
        expected = "forbidden" if surface == "invite" else None  # only the owner or a moderator invites
        if surface == "search" and fleet_without_database:
            expected = "unavailable"  # a fleet searches its PostgreSQL record; this one has none
        assert ack.get("error") == expected, (surface, ack)
        if surface == "search" and expected is None:
            assert "owner's secret" in {m["text"] for m in ack["messages"]}  # theirs was deleted above


@pytest.mark.parametrize("who", ["outsider", "kicked", "guest"])
async def test_whoever_is_not_a_member_is_forbidden_on_every_socket_event(cast, who):
    client = getattr(cast, who)
    for surface, (event, payload) in socket_calls(cast, cast.owner_message).items():
        ack = await client.call(event, payload)
        assert ack["ok"] is False and ack["error"] == "forbidden", (who, surface, ack)


async def test_a_signed_out_token_is_refused_everywhere(urls, cast):
    refused = await try_connect(urls[1], {"token": cast.signed_out_token})
    assert isinstance(refused, dict) and refused["data"]["error"] == "unauthorized", refused
    for method, path, body in (
        ("GET", f"/api/rooms/{cast.room}/messages", None),
        ("POST", f"/api/rooms/{cast.room}/messages", {"text": "x"}),
        ("GET", "/api/me/rooms", None),
        ("GET", "/api/rooms", None),
    ):
        status, _, answer = request(urls[1] + path, method, body, bearer(cast.signed_out_token))
        assert status == 401, (method, path, status, answer)


@pytest.mark.parametrize(
    ("who", "history", "post", "listed"),
    [
        ("owner", 200, 201, True),
        ("member", 200, 201, True),
        ("outsider", 403, 403, False),
        ("kicked", 403, 403, False),
        (None, 403, 403, False),  # no token at all (a guest over HTTP)
    ],
)
async def test_http_routes_answer_members_only(urls, cast, who, history, post, listed):
    headers = bearer(cast.tokens[who]) if who else {}
    path = f"{urls[1]}/api/rooms/{cast.room}/messages"
    status, _, body = request(path, headers=headers)
    assert status == history, body
    if status == 200:
        assert [m["text"] for m in body["messages"]] == ["owner's secret", "member's secret"]
    else:
        assert "secret" not in orjson.dumps(body).decode()
    body = {"text": "via http"} if who else {"text": "via http", "name": "someguest"}
    assert request(path, "POST", body, headers)[0] == post
    if who:
        status, _, found = request(f"{urls[1]}/api/search?q=secret&room={cast.room}", headers=headers)
        assert status == (403 if post == 403 else (200 if urls[0] == urls[1] else 503)), found
    if who:  # changes over HTTP: a member reacts; nobody else may touch the room
        one = f"{path}/{cast.owner_message}"
        assert request(one + "/reactions", "POST", {"emoji": "✅"}, headers)[0] == (200 if post == 201 else 403)
        if post != 201:
            assert request(one, "PATCH", {"text": "defaced"}, headers)[0] == 403
            assert request(one, "DELETE", None, headers)[0] == 403

    async def directory_settled() -> bool:  # the public directory may be a second old
        status, _, answer = request(urls[1] + "/api/rooms", headers=headers)
        return status == 200 and ((cast.room in [r["name"] for r in answer["rooms"]]) == listed)

    await async_wait_for(directory_settled, what="the room list")
    if who:
        status, _, mine = request(urls[1] + "/api/me/rooms", headers=headers)
        entries = {e["room"]: e for e in mine["rooms"]}
        assert (cast.room in entries) == listed
        if listed:
            assert entries[cast.room]["private"] is True and entries[cast.room]["dm"] is False


@pytest.mark.parametrize(("who", "allowed"), [("member", True), ("outsider", False), ("kicked", False), (None, False)])
async def test_the_ws_bridge_lets_members_in_only(urls, cast, who, allowed):
    query = f"room={cast.room}&" + (f"token={cast.tokens[who]}" if who else "name=wsguest")
    async with websockets.connect(urls[1].replace("http", "ws") + "/ws?" + query) as ws:
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if allowed:
            assert first["type"] == "message" and first["text"] == "owner's secret"
        else:
            assert first == {"ok": False, "error": "forbidden", "detail": f"{cast.room!r} is private: members only"}


@pytest.mark.parametrize("who", ["outsider", "kicked", "guest"])
async def test_a_search_of_all_rooms_never_finds_a_private_message_for_a_non_member(cast, who):
    ack = await getattr(cast, who).call("search", {"q": "secret"})
    assert ack.get("error") in (None, "unavailable"), ack
    assert "secret" not in orjson.dumps(ack.get("messages", [])).decode()


async def test_nothing_of_the_room_reaches_those_outside_it(cast):
    await cast.owner.send(cast.room, "after the kick")
    await async_wait_for(lambda: "after the kick" in cast.member.texts(cast.room), what="the member gets it")
    for client in (cast.outsider, cast.guest):  # never members: nothing at all
        seen = orjson.dumps(client.events).decode()
        assert "secret" not in seen and "after the kick" not in seen and cast.room not in seen
    # a member until the kick: what came before was theirs to see, nothing after
    assert "after the kick" not in orjson.dumps(cast.kicked.events).decode()
    assert not any(e.get("room") == cast.room for e in cast.outsider.events["presence"])
    assert cast.kicked.events["membership"] == [{"room": cast.room, "removed": True}]


async def test_a_dm_is_one_room_for_both_and_listed_for_both_even_offline(urls):
    ann, ben = new_account(urls[0]), new_account(urls[1])
    client = await ChatClient(urls[0], ann["user"]["username"], token=ann["token"]).connect()
    try:
        first = await client.call("dm", {"user": ben["user"]["username"]})
        assert first["ok"] and first["room"].startswith("dm-") and first["peer"]["username"] == ben["user"]["username"]
        await client.join(first["room"])
        await client.send(first["room"], "hi ben")
    finally:
        await client.close()
    _, _, listed = request(urls[1] + "/api/me/rooms", headers=bearer(ben["token"]))
    [entry] = [e for e in listed["rooms"] if e["room"] == first["room"]]
    assert entry["dm"] and entry["private"] and entry["unread"] == 1 and entry["peer"]["id"] == ann["user"]["id"]
    other = await ChatClient(urls[1], ben["user"]["username"], token=ben["token"]).connect()
    try:
        again = await other.call("dm", {"user": ann["user"]["username"]})
        assert again["room"] == first["room"], "the same room whichever of the two asks"
        assert [m["text"] for m in (await other.join(first["room"]))["history"]] == ["hi ben"]
    finally:
        await other.close()
    guest = await ChatClient(urls[0], "visitor").connect()
    try:
        assert (await guest.call("dm", {"user": ann["user"]["username"]}))["error"] == "forbidden"
        assert (await guest.call("join", {"room": first["room"]}))["error"] == "forbidden"
    finally:
        await guest.close()


async def test_a_private_room_name_cannot_be_taken_twice_or_from_a_public_room(urls):
    owner = new_account(urls[0])
    client = await ChatClient(urls[0], owner["user"]["username"], token=owner["token"]).connect()
    try:
        public = room()
        await client.join(public)
        assert (await client.call("create", {"room": public, "private": True}))["error"] == "room_exists"
        private = room()
        assert (await client.call("create", {"room": private, "private": True}))["ok"]
        assert (await client.call("create", {"room": private, "private": True}))["error"] == "room_exists"
        assert (await client.call("create", {"room": private}))["error"] == "room_exists"
    finally:
        await client.close()


OPERATIONS = st.lists(
    st.sampled_from(
        ["join", "join since", "leave", "history", "invite self", "kick owner", "dm owner", "create", "read"]
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_no_sequence_of_calls_by_a_non_member_yields_a_private_message(urls, operations):
    asyncio.run(_non_member_tries(urls, operations))


async def _non_member_tries(urls: tuple[str, str], operations: list[str]) -> None:
    owner, outsider = new_account(urls[0]), new_account(urls[1])
    r = room()
    boss = await ChatClient(urls[0], owner["user"]["username"], token=owner["token"]).connect()
    spy = await ChatClient(urls[1], outsider["user"]["username"], token=outsider["token"]).connect()
    try:
        await boss.call("create", {"room": r, "private": True})
        await boss.join(r)
        secret = await boss.send(r, "the secret plan")
        calls = {
            "join": ("join", {"room": r}),
            "join since": ("join", {"room": r, "since": "000000000000"}),
            "leave": ("leave", {"room": r, "forget": True}),
            "history": ("history", {"room": r, "limit": 500}),
            "invite self": ("invite", {"room": r, "user": outsider["user"]["username"]}),
            "kick owner": ("kick", {"room": r, "user": owner["user"]["username"]}),
            "dm owner": ("dm", {"user": owner["user"]["username"]}),
            "create": ("create", {"room": r, "private": True}),
            "read": ("read", {"room": r, "seq": 1}),
        }
        answers = []
        for op in operations:
            event, payload = calls[op]
            answers.append(await spy.call(event, payload))
            await boss.send(r, f"more secrets after {op}")
        await boss.send(r, "the end")
        await async_wait_for(lambda: "the end" in boss.texts(r), what="the owner's own copy")
        leaked = orjson.dumps([answers, dict(spy.events)]).decode()
        assert "secret" not in leaked and secret["id"] not in leaked.replace('"seq":1', "")
        assert not [m for m in spy.messages() if m["room"] == r]
    finally:
        await boss.close()
        await spy.close()


async def test_in_a_dm_each_sees_how_far_the_other_read_unless_receipts_are_off(urls):
    ann, ben = new_account(urls[0]), new_account(urls[1])
    a = await ChatClient(urls[0], ann["user"]["username"], token=ann["token"]).connect()
    b = await ChatClient(urls[1], ben["user"]["username"], token=ben["token"]).connect()
    try:
        r = (await a.call("dm", {"user": ben["user"]["username"]}))["room"]
        await a.join(r)
        await b.join(r)
        sent = [await a.send(r, f"line {i}") for i in range(3)]
        assert (await b.call("read", {"room": r, "seq": sent[1]["seq"]}))["read_seq"] == 2
        await async_wait_for(lambda: a.events["receipt"], what="ann sees ben's receipt")
        assert a.events["receipt"][-1] == {"room": r, "user": ben["user"]["id"], "seq": 2}
        assert (await b.call("read", {"room": r, "seq": 3, "receipt": False}))["read_seq"] == 3
        await a.send(r, "marker")
        await async_wait_for(lambda: "marker" in b.texts(r), what="the marker")
        assert [e["seq"] for e in a.events["receipt"]] == [2], "switched off, no receipt goes out"
        again = await ChatClient(urls[0], ann["user"]["username"], token=ann["token"]).connect()
        try:
            assert (await again.join(r))["peer_read_seq"] == 2
        finally:
            await again.close()
    finally:
        await a.close()
        await b.close()


async def test_a_mention_in_a_private_room_reaches_members_it_names_and_no_one_outside(urls):
    if urls[0] != urls[1]:
        pytest.skip("mention notifications in a fleet come from the worker: tests/fleet/test_fleet.py")
    owner, member, outsider = new_account(urls[0]), new_account(urls[0]), new_account(urls[0])
    clients = [
        await ChatClient(urls[0], a["user"]["username"], token=a["token"]).connect() for a in (owner, member, outsider)
    ]
    boss, friend, stranger = clients
    try:
        r = room()
        await boss.call("create", {"room": r, "private": True})
        await boss.call("invite", {"room": r, "user": member["user"]["username"]})
        await boss.join(r)
        await friend.join(r)
        names = f"@{member['user']['username']} @{outsider['user']['username']}"
        await boss.send(r, f"{names} the secret meeting is at noon")
        await async_wait_for(lambda: friend.events["notification"], what="the member named is notified")
        assert friend.events["notification"][0]["mentions"]
        await boss.send(r, "marker")
        await async_wait_for(lambda: "marker" in friend.texts(r), what="the marker")
        assert "secret" not in orjson.dumps(stranger.events).decode()
    finally:
        for client in clients:
            await client.close()
