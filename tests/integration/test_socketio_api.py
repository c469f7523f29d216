"""The Socket.IO contract of PROTOCOL.md against a real embedded backend."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import socketio

from tests.support import async_wait_for

ACCEL_MODES = ("on", "off")
"""Every test here runs with the fast path and with the stock libraries (``CHAT_ACCEL=off``)."""


def room() -> str:
    return "t-" + uuid.uuid4().hex[:12]


async def test_two_clients_exchange_messages_both_ways(embedded, clients):
    r = room()
    alice = await clients(embedded.url, "alice")
    bob = await clients(embedded.url, "bob")
    await alice.join(r)
    await bob.join(r)
    ack = await alice.send(r, "hello bob")
    assert ack["ok"] and ack["seq"] == 1 and isinstance(ack["ts"], int)
    await async_wait_for(lambda: "hello bob" in bob.texts(r), what="bob gets alice's message")
    await bob.send(r, "hi alice")
    await async_wait_for(lambda: "hi alice" in alice.texts(r), what="alice gets bob's message")
    received = bob.messages(r)[0]
    assert received["user"] == {"id": "anon:alice", "name": "alice", "guest": True}
    assert received["id"] == ack["id"] and received["room"] == r
    # the sender gets its own message too, once
    await async_wait_for(lambda: alice.texts(r) == ["hello bob", "hi alice"], what="alice sees both once")


async def test_join_returns_latest_history_members_and_epoch(embedded, clients):
    r = room()
    alice = await clients(embedded.url, "alice")
    await alice.join(r)
    for i in range(60):
        assert (await alice.send(r, f"m{i}"))["ok"]
    bob = await clients(embedded.url, "bob")
    ack = await bob.join(r)
    assert [m["text"] for m in ack["history"]] == [f"m{i}" for i in range(10, 60)]
    assert [m["seq"] for m in ack["history"]] == list(range(11, 61))
    assert {u["name"] for u in ack["members"]} == {"alice", "bob"}
    assert ack["epoch"] and ack["room"] == r


async def test_join_since_returns_exactly_the_missed_messages(embedded, clients):
    r = room()
    alice = await clients(embedded.url, "alice")
    first = await alice.join(r)
    acks = [await alice.send(r, f"m{i}") for i in range(5)]
    bob = await clients(embedded.url, "bob")
    ack = await bob.join(r, since=acks[1]["id"])
    assert [m["text"] for m in ack["history"]] == ["m2", "m3", "m4"]
    assert ack["epoch"] == first["epoch"]


async def test_resending_a_client_id_returns_the_first_message_and_broadcasts_nothing(embedded, clients):
    r = room()
    alice = await clients(embedded.url, "alice")
    bob = await clients(embedded.url, "bob")
    await alice.join(r)
    await bob.join(r)
    first = await alice.send(r, "once", client_id="cid-1")
    again = await alice.send(r, "once", client_id="cid-1")
    assert again == first
    await alice.send(r, "marker")
    await async_wait_for(lambda: "marker" in bob.texts(r), what="marker")
    assert bob.texts(r) == ["once", "marker"]


async def test_history_pages_backwards_until_exhausted(embedded, clients):
    r = room()
    alice = await clients(embedded.url, "alice")
    await alice.join(r)
    for i in range(25):
        await alice.send(r, f"m{i}")
    page = await alice.call("history", {"room": r, "limit": 10})
    assert page["ok"] and page["more"] and [m["seq"] for m in page["messages"]] == list(range(16, 26))
    seen = page["messages"]
    while page["more"]:
        page = await alice.call("history", {"room": r, "before": seen[0]["id"], "limit": 10})
        seen = page["messages"] + seen
    assert [m["text"] for m in seen] == [f"m{i}" for i in range(25)]


async def test_presence_and_typing_reach_the_others(embedded, clients):
    r = room()
    alice = await clients(embedded.url, "alice")
    await alice.join(r)
    bob = await clients(embedded.url, "bob")
    await bob.join(r)
    await async_wait_for(lambda: any(p.get("joined", {}).get("name") == "bob" for p in alice.events["presence"]))
    assert (await bob.call("typing", {"room": r, "typing": True}))["ok"]
    await async_wait_for(lambda: alice.events["typing"], what="typing event")
    assert alice.events["typing"][0] == {
        "room": r,
        "user": {"id": "anon:bob", "name": "bob", "guest": True},
        "typing": True,
    }
    assert not bob.events["typing"], "the typist does not hear itself"
    assert (await bob.call("leave", {"room": r}))["ok"]
    await async_wait_for(lambda: any(p.get("left", {}).get("name") == "bob" for p in alice.events["presence"]))
    await bob.close()


async def test_a_spoofed_user_field_is_ignored(embedded, clients):
    r = room()
    mallory = await clients(embedded.url, "mallory")
    alice = await clients(embedded.url, "alice")
    await mallory.join(r)
    await alice.join(r)
    payload = {
        "room": r,
        "text": "it is me",
        "client_id": "x1",
        "user": {"id": "anon:alice", "name": "alice", "guest": True},
    }
    assert (await mallory.call("message", payload))["ok"]
    await async_wait_for(lambda: alice.messages(r), what="message")
    assert alice.messages(r)[0]["user"]["name"] == "mallory"


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("message", "just a string", "bad_request"),
        ("message", {"room": "NOT A ROOM!", "text": "x"}, "bad_request"),
        ("message", {"room": "general", "text": 42}, "bad_request"),
        ("message", {"room": "general", "text": "   "}, "bad_request"),
        ("message", {"room": "never-joined", "text": "hi"}, "not_in_room"),
        ("message", {"room": "general", "text": "x" * 4001}, "too_large"),
        ("join", {"room": ["general"]}, "bad_request"),
        ("join", {"room": "general", "since": "abc"}, "bad_request"),
        ("leave", {"room": "never-joined"}, "not_in_room"),
        ("typing", {"room": "general", "typing": "yes"}, "bad_request"),
        ("history", {"room": "no-such-room-ever"}, "not_found"),
        ("history", {"room": "general", "limit": 100000}, "bad_request"),
        ("no-such-event", {}, "unknown_event"),
        ("message", None, "bad_request"),
    ],
)
async def test_bad_input_gets_an_error_ack_and_keeps_the_socket(embedded, clients, event, payload, code):
    c = await clients(embedded.url, "tester")
    await c.join("general")
    ack = await c.call(event, payload)
    assert ack["ok"] is False and ack["error"] == code and ack["detail"], ack
    assert c.sio.connected
    assert (await c.call("typing", {"room": "general", "typing": False}))["ok"]


async def test_oversized_text_is_refused_and_not_broadcast(embedded, clients):
    r = room()
    a = await clients(embedded.url, "a")
    b = await clients(embedded.url, "b")
    await a.join(r)
    await b.join(r)
    assert (await a.send(r, "y" * 5000))["error"] == "too_large"
    await a.send(r, "ok")
    await async_wait_for(lambda: b.texts(r) == ["ok"], what="only the valid message")


async def test_flooding_sender_is_rate_limited_without_disconnect(backends, clients):
    backend = backends(env={"CHAT_RATE": "5", "CHAT_RATE_BURST": "5"})
    r = room()
    c = await clients(backend.url, "flooder")
    await c.join(r)
    acks = [await c.send(r, f"m{i}") for i in range(20)]
    codes = [a.get("error") for a in acks if not a["ok"]]
    assert codes and set(codes) == {"rate_limited"}
    assert sum(1 for a in acks if a["ok"]) < 20 and c.sio.connected


@pytest.mark.parametrize("auth", [{}, {"name": ""}, {"name": "x" * 33}, {"name": "bad\x00name"}, {"name": 7}])
async def test_invalid_names_are_refused_with_a_clear_connect_error(embedded, auth):
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError) as info:
        await client.connect(embedded.url, auth=auth, transports=["websocket"], wait_timeout=5)
    assert "name" in str(info.value) or "auth" in str(info.value)


async def test_long_polling_transport_works_on_one_instance(embedded):
    from tests.support import ChatClient

    r = room()
    c = ChatClient(embedded.url, "poller")
    await c.connect(transports=["polling"])
    try:
        await c.join(r)
        ack = await c.send(r, "over polling")
        assert ack["ok"]
        await async_wait_for(lambda: c.texts(r) == ["over polling"], what="echo over polling")
    finally:
        await c.close()


async def test_a_crowd_joining_at_once_shares_presence_events(embedded, clients):
    r = room()
    observer = await clients(embedded.url, "observer")
    await observer.join(r)
    crowd = [await clients(embedded.url, f"guest{i}") for i in range(30)]
    await asyncio.gather(*(c.join(r) for c in crowd))

    def announced() -> set[str]:
        names: set[str] = set()
        for event in observer.events["presence"]:
            names |= {u["name"] for u in event.get("joined_all", [event["joined"]] if "joined" in event else [])}
        return names

    crowd_names = {f"guest{i}" for i in range(30)}
    await async_wait_for(lambda: crowd_names <= announced(), what="every join to be announced")
    await async_wait_for(lambda: len(observer.events["presence"][-1]["members"]) == 31, what="the full member list")
    assert len(observer.events["presence"]) < 30, "joins within the window share events, not one member list each"
