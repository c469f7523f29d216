"""Edit, delete, react and reply, on every transport, embedded and across a 2-instance fleet.

Each change is acked like a send, reaches the room live as an ``update``
carrying the message's new state, is in every history read, and reaches a
client that resumes with ``since`` and ``rev``.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import websockets

from tests.security.helpers import request
from tests.support import MODERATOR, ChatClient, async_wait_for, new_account


def room() -> str:
    return "life-" + uuid.uuid4().hex[:10]


def updates(client: ChatClient, room_name: str) -> list[dict]:
    return [u for u in client.events["update"] if u["room"] == room_name]


async def pair(urls, clients, r: str) -> tuple[ChatClient, ChatClient]:
    alice = await clients(urls[0], "alice")
    bob = await clients(urls[1], "bob")
    await alice.join(r)
    await bob.join(r)
    return alice, bob


async def test_an_edit_reaches_everyone_live_and_stays_in_history(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    sent = await alice.send(r, "helo wrld")
    ack = await alice.call("edit", {"room": r, "id": sent["id"], "text": "hello world"})
    assert ack["ok"] and ack["rev"] == 1 and ack["message"]["text"] == "hello world"
    for client in (alice, bob):
        await async_wait_for(lambda c=client: updates(c, r), what=f"{client.name} gets the update")
        [update] = updates(client, r)
        assert (update["kind"], update["id"], update["rev"]) == ("edit", sent["id"], 1)
        assert update["message"]["text"] == "hello world" and update["message"]["edited_ts"] >= sent["ts"]
    carol = await clients(urls[1], "carol")
    [stored] = (await carol.join(r))["history"]
    assert stored["text"] == "hello world" and stored["rev"] == 1 and "edited_ts" in stored
    status, _, page = request(f"{urls[0]}/api/rooms/{r}/messages")
    assert status == 200 and page["messages"][0]["text"] == "hello world"


async def test_only_the_author_may_edit_and_a_refusal_changes_nothing(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    sent = await alice.send(r, "mine")
    ack = await bob.call("edit", {"room": r, "id": sent["id"], "text": "hijacked"})
    assert ack == {"ok": False, "error": "forbidden", "detail": "only its author can edit a message"}
    ack = await bob.call("delete", {"room": r, "id": sent["id"]})
    assert ack["error"] == "forbidden"
    await alice.send(r, "after")  # a marker: anything broadcast before it has arrived
    await async_wait_for(lambda: bob.texts(r) == ["mine", "after"], what="the marker")
    assert updates(bob, r) == [] and updates(alice, r) == []
    assert (await bob.call("history", {"room": r}))["messages"][0]["text"] == "mine"


async def test_a_delete_leaves_a_tombstone_for_everyone(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    sent = await alice.send(r, "oops, my password is hunter2")
    ack = await alice.call("delete", {"room": r, "id": sent["id"]})
    assert ack["ok"] and ack["message"]["deleted"] is True and ack["message"]["text"] == ""
    await async_wait_for(lambda: updates(bob, r), what="bob gets the delete")
    assert updates(bob, r)[0]["kind"] == "delete" and updates(bob, r)[0]["message"]["deleted"]
    history = (await bob.call("history", {"room": r}))["messages"]
    assert history[0]["deleted"] and "hunter2" not in orjson.dumps(history).decode()
    again = await alice.call("edit", {"room": r, "id": sent["id"], "text": "back"})
    assert again["error"] == "not_found"


async def test_a_moderator_account_deletes_anyone_s_message_and_others_may_not(urls, clients):
    r = room()
    alice, _ = await pair(urls, clients, r)
    sent = await alice.send(r, "spam spam spam")
    mod = new_account(urls[1], MODERATOR)
    moderator = await clients(urls[1], MODERATOR, token=mod["token"])
    await moderator.join(r)
    plain = new_account(urls[1])
    member = await clients(urls[1], plain["user"]["username"], token=plain["token"])
    await member.join(r)
    assert (await member.call("delete", {"room": r, "id": sent["id"]}))["error"] == "forbidden"
    ack = await moderator.call("delete", {"room": r, "id": sent["id"]})
    assert ack["ok"] and ack["message"]["deleted"]
    await async_wait_for(lambda: updates(alice, r), what="alice sees her message removed")


async def test_reactions_from_two_people_add_up_and_can_be_taken_back(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    sent = await alice.send(r, "lunch?")
    assert (await bob.call("react", {"room": r, "id": sent["id"], "emoji": "👍"}))["ok"]
    ack = await alice.call("react", {"room": r, "id": sent["id"], "emoji": "👍", "on": True})
    assert ack["message"]["reactions"] == {"👍": ["anon:bob", "anon:alice"]}
    ack = await bob.call("react", {"room": r, "id": sent["id"], "emoji": "👍", "on": False})
    assert ack["message"]["reactions"] == {"👍": ["anon:alice"]} and ack["rev"] == 3
    await async_wait_for(lambda: len(updates(alice, r)) == 3, what="three reaction updates")
    assert [u["rev"] for u in updates(alice, r)] == [1, 2, 3]
    assert updates(alice, r)[-1]["message"]["reactions"] == {"👍": ["anon:alice"]}


async def test_a_reply_names_the_message_it_answers(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    question = await alice.send(r, "who's in?")
    ack = await bob.call("message", {"room": r, "text": "me", "reply_to": question["id"], "client_id": "r1"})
    assert ack["ok"]
    await async_wait_for(lambda: len(alice.messages(r)) == 2, what="the reply")
    assert alice.messages(r)[1]["reply_to"] == question["id"]
    bad = await bob.call("message", {"room": r, "text": "me", "reply_to": "000000000099", "client_id": "r2"})
    assert bad["error"] == "not_found"


async def test_a_resent_change_is_applied_and_announced_once(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    sent = await alice.send(r, "v1")
    first = await alice.call("edit", {"room": r, "id": sent["id"], "text": "v2", "client_id": "e-1"})
    again = await alice.call("edit", {"room": r, "id": sent["id"], "text": "v2", "client_id": "e-1"})
    assert first["rev"] == again["rev"] == 1
    await alice.send(r, "marker")
    await async_wait_for(lambda: "marker" in bob.texts(r), what="the marker")
    assert len(updates(bob, r)) == 1


async def test_a_client_resuming_with_since_and_rev_gets_the_changes_it_missed(urls, clients):
    r = room()
    alice, bob = await pair(urls, clients, r)
    old = [await alice.send(r, f"m{i}") for i in range(3)]
    await alice.call("edit", {"room": r, "id": old[0]["id"], "text": "m0 (seen live)"})
    await async_wait_for(lambda: updates(bob, r), what="bob sees the first edit live")
    held_rev = updates(bob, r)[-1]["rev"]
    await bob.close()
    await alice.call("edit", {"room": r, "id": old[1]["id"], "text": "m1 edited while bob was away"})
    await alice.call("delete", {"room": r, "id": old[2]["id"]})
    await alice.call("react", {"room": r, "id": old[1]["id"], "emoji": "🎉"})
    await alice.send(r, "new while away")
    back = await clients(urls[1], "bob")
    ack = await back.join(r, since=old[2]["id"], rev=held_rev)
    assert [m["text"] for m in ack["history"]] == ["new while away"]
    assert [(u["id"], u["kind"]) for u in ack["updates"]] == [(old[2]["id"], "delete"), (old[1]["id"], "reaction")]
    assert ack["updates"][1]["message"]["text"] == "m1 edited while bob was away"
    assert ack["updates"][1]["message"]["reactions"] == {"🎉": ["anon:alice"]}
    assert ack["rev"] == 4 and "updates_truncated" not in ack


async def test_bad_changes_are_refused_with_a_clear_error(urls, clients):
    r = room()
    alice, _ = await pair(urls, clients, r)
    sent = await alice.send(r, "x")
    cases = [
        ("edit", {"room": r, "id": sent["id"]}, "bad_request"),
        ("edit", {"room": r, "id": sent["id"], "text": 5}, "bad_request"),
        ("edit", {"room": r, "id": "abc", "text": "y"}, "bad_request"),
        ("edit", {"room": r, "id": sent["id"], "text": "y" * 5000}, "too_large"),
        ("edit", {"room": r, "id": "000000000042", "text": "y"}, "not_found"),
        ("react", {"room": r, "id": sent["id"], "emoji": ""}, "bad_request"),
        ("react", {"room": r, "id": sent["id"], "emoji": "x" * 33}, "bad_request"),
        ("react", {"room": r, "id": sent["id"], "emoji": "a b"}, "bad_request"),
        ("react", {"room": r, "id": sent["id"], "emoji": "👍", "on": "yes"}, "bad_request"),
        ("delete", {"room": room(), "id": sent["id"]}, "not_in_room"),
        ("delete", ["not", "an", "object"], "bad_request"),
    ]
    for event, payload, code in cases:
        ack = await alice.call(event, payload)
        assert ack["ok"] is False and ack["error"] == code, (event, payload, ack)
    assert (await alice.call("history", {"room": r}))["messages"][0]["text"] == "x"
    for n in range(21):
        await alice.call("react", {"room": r, "id": sent["id"], "emoji": f"e{n}"})
    state = (await alice.call("history", {"room": r}))["messages"][0]
    assert len(state["reactions"]) == 20


async def test_http_changes_need_a_token_and_reach_the_sockets_in_the_room(urls, clients):
    r = room()
    account = new_account(urls[0])
    bearer = {"Authorization": "Bearer " + account["token"]}
    watcher = await clients(urls[1], "watcher")
    await watcher.join(r)
    status, _, posted = request(f"{urls[0]}/api/rooms/{r}/messages", "POST", {"text": "via http"}, bearer)
    assert status == 201
    base = f"{urls[0]}/api/rooms/{r}/messages/{posted['id']}"
    assert request(base, "PATCH", {"text": "anon edit"})[0] == 401
    status, _, body = request(base, "PATCH", {"text": "edited via http"}, bearer)
    assert status == 200 and body["message"]["text"] == "edited via http" and body["rev"] == 1
    status, _, body = request(base + "/reactions", "POST", {"emoji": "✅"}, bearer)
    assert status == 200 and body["message"]["reactions"] == {"✅": [account["user"]["id"]]}
    other = new_account(urls[0])
    status, _, body = request(base, "DELETE", None, {"Authorization": "Bearer " + other["token"]})
    assert status == 403 and body["error"] == "forbidden"
    assert request(f"{urls[0]}/api/rooms/{r}/messages/nope", "DELETE", None, bearer)[0] == 400
    status, _, body = request(base, "DELETE", None, bearer)
    assert status == 200 and body["message"]["deleted"] is True
    await async_wait_for(lambda: len(updates(watcher, r)) == 3, what="three updates over HTTP")
    assert [u["kind"] for u in updates(watcher, r)] == ["edit", "reaction", "delete"]


async def test_the_ws_bridge_sends_typed_frames_and_takes_json_commands(urls, clients):
    r = room()
    ws_url = urls[1].replace("http", "ws") + f"/ws?room={r}&name=wsuser"
    alice = await clients(urls[0], "alice")
    await alice.join(r)
    sent = await alice.send(r, "from socket.io")
    async with websockets.connect(ws_url) as ws:
        first = orjson.loads(await ws.recv())
        assert first["type"] == "message" and first["text"] == "from socket.io"
        await alice.call("edit", {"room": r, "id": sent["id"], "text": "edited"})
        update = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert update["type"] == "update" and update["message"]["text"] == "edited"
        await ws.send("plain text, as the seed client sends")
        mine = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert mine["type"] == "message" and mine["user"]["name"] == "wsuser"
        await ws.send(orjson.dumps({"type": "edit", "id": mine["id"], "text": "fixed"}).decode())
        frames = [orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        ack = next(f for f in frames if f["type"] == "ack")
        assert ack["ok"] and ack["message"]["text"] == "fixed"
        assert any(f["type"] == "update" and f["id"] == mine["id"] for f in frames)
        await ws.send(orjson.dumps({"type": "edit", "id": sent["id"], "text": "not mine"}).decode())
        refused = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert refused == {
            "type": "ack",
            "ok": False,
            "error": "forbidden",
            "detail": "only its author can edit a message",
        }
