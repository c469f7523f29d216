"""Many stateless instances over one Redis behave, to clients, like one server."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import pytest
import socketio
import websockets

from tests.fleet.conftest import FLEET_ENV
from tests.support import ChatClient, async_wait_for, http_get, rooms_listed, scrape

pytestmark = pytest.mark.fleet


def room() -> str:
    return "f-" + uuid.uuid4().hex[:12]


async def test_messages_typing_and_presence_cross_instances(fleet, clients):
    a, b = fleet(2)
    r = room()
    alice = await clients(a.url, "alice")
    bob = await clients(b.url, "bob")
    await alice.join(r)
    ack = await bob.join(r)
    assert {u["name"] for u in ack["members"]} == {"alice", "bob"}
    await async_wait_for(lambda: any(p.get("joined", {}).get("name") == "bob" for p in alice.events["presence"]))
    sent = await alice.send(r, "across the fleet")
    await async_wait_for(lambda: bob.texts(r) == ["across the fleet"], what="cross-instance delivery")
    assert bob.messages(r)[0]["seq"] == sent["seq"]
    await bob.call("typing", {"room": r, "typing": True})
    await async_wait_for(lambda: alice.events["typing"], what="typing across instances")
    # The directory may be up to a second old (backend/chat.py, DIRECTORY_TTL).
    await async_wait_for(lambda: {"name": r, "members": 2} in rooms_listed(a.url), what="the room listed")


async def test_members_of_a_killed_instance_expire_with_a_left_event(fleet, clients):
    a, b = fleet(2)
    r = room()
    alice = await clients(a.url, "alice")
    await alice.join(r)
    bob = await clients(b.url, "bob")
    await bob.join(r)
    b.kill()
    started = time.monotonic()
    await async_wait_for(
        lambda: any(p.get("left", {}).get("name") == "bob" for p in alice.events["presence"]),
        timeout=30,
        what="bob's presence to expire after SIGKILL",
    )
    assert time.monotonic() - started < 30
    members = (await alice.call("join", {"room": r}))["members"]
    assert [m["name"] for m in members] == ["alice"]


async def test_a_client_id_resent_to_another_instance_is_not_duplicated(fleet, clients):
    a, b = fleet(2)
    r = room()
    watcher = await clients(b.url, "watcher")
    await watcher.join(r)
    first_conn = await clients(a.url, "sam")
    await first_conn.join(r)
    first = await first_conn.send(r, "only once", client_id="same-id")
    await first_conn.close()
    second_conn = await clients(b.url, "sam")
    await second_conn.join(r)
    again = await second_conn.send(r, "only once", client_id="same-id")
    assert again["id"] == first["id"]
    await second_conn.send(r, "marker")
    await async_wait_for(lambda: "marker" in watcher.texts(r), what="marker")
    assert watcher.texts(r) == ["only once", "marker"]


async def _send_stream(sender: ChatClient, r: str, count: int, acked: list[str], pause: float = 0.003) -> None:
    for i in range(count):
        text = f"m{i:04d}"
        ack = await sender.send(r, text, client_id=f"c{i}")
        if ack.get("ok"):
            acked.append(text)
        await asyncio.sleep(pause)


async def test_a_client_resumes_on_another_instance_with_nothing_lost_or_doubled(fleet, clients):
    a, b, c = fleet(3)
    r = room()
    sender = await clients(c.url, "sender")
    await sender.join(r)
    reader = ChatClient(a.url, "reader")
    await reader.connect()
    await reader.join(r)
    acked: list[str] = []
    stream = asyncio.create_task(_send_stream(sender, r, 300, acked))
    await async_wait_for(lambda: len(reader.messages(r)) >= 80, what="some traffic before the crash")
    a.kill()  # the reader's instance dies mid-stream
    seen = reader.messages(r)
    last_id = seen[-1]["id"]
    resumed = ChatClient(b.url, "reader")
    await resumed.connect()
    ack = await resumed.join(r, since=last_id)
    await stream
    await async_wait_for(lambda: len(seen) + len(ack["history"]) + len(resumed.messages(r)) >= 300, what="catch-up")
    got = [m["text"] for m in seen + ack["history"] + resumed.messages(r)]
    assert got == acked == [f"m{i:04d}" for i in range(300)], "no loss, no duplicates, in order"
    await resumed.close()


async def test_killing_redis_pubsub_links_loses_nothing_for_plain_clients(fleet, clients, redis_server):
    a, b = fleet(2)
    r = room()
    sender = await clients(a.url, "sender")
    await sender.join(r)
    plain = await clients(b.url, "plain")  # knows nothing of seq; relies on the server's relay
    await plain.join(r)
    acked: list[str] = []
    stream = asyncio.create_task(_send_stream(sender, r, 200, acked))
    for _ in range(3):
        await async_wait_for(lambda n=len(plain.messages(r)): len(plain.messages(r)) > n + 20, what="traffic")
        redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
    await stream
    await async_wait_for(lambda: len(plain.messages(r)) >= len(acked), timeout=20, what="relay to fill the gaps")
    assert plain.texts(r) == acked
    assert [m["seq"] for m in plain.messages(r)] == list(range(1, len(acked) + 1))
    # what pub/sub lost while its link was down came back from the store, and is counted
    assert scrape(b.url, "fleetchat_relay_replayed_total") > 0
    assert scrape(b.url, "fleetchat_pubsub_reconnects_total") >= 3


async def test_redis_restart_mid_stream_loses_nothing_acknowledged(fleet, clients, private_redis):
    a, b = fleet(2, redis=private_redis)
    r = room()
    sender = await clients(a.url, "sender")
    await sender.join(r)
    reader = await clients(b.url, "reader")
    await reader.join(r)
    acked: list[str] = []
    refusals: list[str] = []

    async def stream() -> None:
        # A real client: an unanswered or refused send is retried with the same
        # client_id, so a message stored just before Redis died is not doubled.
        for i in range(200):
            for _attempt in range(200):
                ack = await sender.send(r, f"m{i:04d}", client_id=f"c{i}")
                if ack.get("ok"):
                    acked.append(f"m{i:04d}")
                    break
                refusals.append(ack["error"])
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(stream())
    await async_wait_for(lambda: len(acked) >= 50, what="traffic before the outage")
    private_redis.kill()
    await async_wait_for(lambda: http_get(a.url + "/readyz")[0] == 503, what="readyz to report the outage")
    await asyncio.sleep(0.5)
    private_redis.start()
    back = time.monotonic()
    await async_wait_for(lambda: http_get(a.url + "/readyz")[0] == 200, what="readyz to recover")
    await task
    assert refusals and set(refusals) == {"unavailable"}, "during the outage sends are refused, never lost"
    expected = [f"m{i:04d}" for i in range(200)]
    assert acked == expected
    await async_wait_for(lambda: reader.texts(r)[-1:] == expected[-1:], timeout=20, what="delivery after recovery")
    recovered_in = time.monotonic() - back
    assert reader.texts(r) == expected, "every acknowledged message arrives once, in order"
    ack = await reader.call("history", {"room": r, "limit": 500})
    assert [m["text"] for m in ack["messages"]] == expected, "and every one is still stored"
    print(f"redis restart: {len(refusals)} refusals, all delivered {recovered_in:.2f}s after the restart")


async def test_a_mention_is_notified_to_the_user_on_another_instance(fleet, clients, workers):
    a, b = fleet(2)
    workers("w-mention")
    r = room()
    alice = await clients(a.url, "alice")
    await alice.join(r)
    bob = await clients(b.url, "Bob")  # not even in the room
    sent = await alice.send(r, "hey @bob, look")
    await async_wait_for(lambda: bob.events["notification"], timeout=20, what="notification")
    note = bob.events["notification"][0]
    assert note["kind"] == "mention" and note["room"] == r and note["message"]["id"] == sent["id"]
    assert not alice.events["notification"]


async def test_a_mention_in_a_private_room_never_carries_it_outside(fleet, clients, workers):
    from tests.support import new_account

    a, b = fleet(2)
    workers("w-private")
    owner, member, outsider = (new_account(a.url) for _ in range(3))
    boss = await clients(a.url, owner["user"]["username"], token=owner["token"])
    friend = await clients(b.url, member["user"]["username"], token=member["token"])
    stranger = await clients(b.url, outsider["user"]["username"], token=outsider["token"])
    r = room()
    await boss.call("create", {"room": r, "private": True})
    await boss.call("invite", {"room": r, "user": member["user"]["username"]})
    await boss.join(r)
    await friend.join(r)
    await boss.send(r, f"@{member['user']['username']} @{outsider['user']['username']} secret at noon")
    await async_wait_for(lambda: friend.events["notification"], timeout=20, what="the member is notified")
    await boss.send(r, f"@{outsider['user']['username']} one more")
    await async_wait_for(lambda: len(friend.events["notification"]) == 2, timeout=20, what="the second one")
    assert not stranger.events["notification"] and "secret" not in str(stranger.events)


async def test_a_restarted_worker_notifies_each_mention_exactly_once(fleet, clients, workers):
    (a,) = fleet(1)
    r = room()
    alice = await clients(a.url, "alice")
    await alice.join(r)
    carol = await clients(a.url, "carol")
    worker = workers("w-restart")
    await alice.send(r, "@carol one")
    await async_wait_for(lambda: len(carol.events["notification"]) == 1, timeout=20, what="first notification")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(10) == 0
    for i in range(5):
        await alice.send(r, f"@carol while the worker was down {i}")
    workers("w-restart")
    await async_wait_for(lambda: len(carol.events["notification"]) >= 6, timeout=20, what="backlog notified")
    await asyncio.sleep(1.0)  # a repeat would arrive in this window
    texts = [n["message"]["text"] for n in carol.events["notification"]]
    assert texts == ["@carol one"] + [f"@carol while the worker was down {i}" for i in range(5)]


async def test_sigterm_hands_clients_to_another_instance_without_waiting_out_the_grace_period(backends, redis_server):
    # A 60 s grace period: without the drain, hypercorn would keep the socket
    # open (and the process alive) for all of it.
    env = {**FLEET_ENV, "REDIS_URL": redis_server.url}
    a = backends(env=env, graceful_timeout=60)
    b = backends(env=env)
    r = room()
    client = socketio.AsyncClient(reconnection=True, reconnection_delay=0.1, reconnection_delay_max=0.2)
    reasons: list[str] = []
    client.on("disconnect", lambda reason=None: reasons.append(str(reason)))
    # Fail over the way a load balancer would: the next connection goes to b.
    await client.connect(a.url, auth={"name": "mover"}, transports=["websocket"])
    assert (await client.call("join", {"room": r}))["ok"]
    client.connection_url = b.url
    bare = await websockets.connect(a.url.replace("http", "ws") + f"/ws?room={r}&name=bare")
    a.proc.send_signal(signal.SIGTERM)
    await async_wait_for(lambda: reasons, timeout=30, what="the drained instance to close the socket")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(bare.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, "the bridge says: going away"
    # a transport-level close (not "io server disconnect"), so the client reconnects by itself
    assert reasons[0] in {"transport close", "transport error"}, reasons
    assert a.proc.wait(30) == 0, "exits cleanly, long before its 60 s grace period"
    await async_wait_for(lambda: client.connected, timeout=30, what="the client to reconnect elsewhere")
    assert (await client.call("join", {"room": r}))["ok"]
    assert (await client.call("message", {"room": r, "text": "still here", "client_id": "m1"}))["ok"]
    await client.disconnect()
