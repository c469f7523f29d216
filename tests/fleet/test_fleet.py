"""Many stateless instances over one Redis behave, to clients, like one server."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import socketio
import websockets

from tests.fleet.conftest import FLEET_ENV
from tests.support import ChatClient, async_wait_for, http_get, rooms_listed, scrape

pytestmark = pytest.mark.fleet


async def test_messages_typing_and_presence_cross_instances(fleet, clients, fleet_redis):
    a, b = fleet(2)
    rooms = fleet_redis.rooms(3)  # over the cluster, one room on each master
    alice = await clients(a.url, "alice")
    bob = await clients(b.url, "bob")
    for r in rooms:
        await alice.join(r)
        ack = await bob.join(r)
        assert {u["name"] for u in ack["members"]} == {"alice", "bob"}
        assert fleet_redis.subscribers(r) == 2, "each instance listens on the room's channel"
    await async_wait_for(lambda: any(p.get("joined", {}).get("name") == "bob" for p in alice.events["presence"]))
    sent = {r: await alice.send(r, f"across the fleet in {r}") for r in rooms}
    for r in rooms:
        await async_wait_for(lambda r=r: bob.texts(r) == [f"across the fleet in {r}"], what=f"delivery in {r}")
        assert bob.messages(r)[0]["seq"] == sent[r]["seq"]
    await bob.call("typing", {"room": rooms[1], "typing": True})
    await async_wait_for(lambda: alice.events["typing"], what="typing across instances")
    assert alice.events["typing"][0]["room"] == rooms[1]
    history = await bob.call("history", {"room": rooms[2], "limit": 10})
    assert [m["text"] for m in history["messages"]] == [f"across the fleet in {rooms[2]}"]
    # The directory may be up to a second old (backend/chat.py, DIRECTORY_TTL).
    for r in rooms:
        await async_wait_for(lambda r=r: {"name": r, "members": 2} in rooms_listed(a.url), what=f"{r} listed")


async def test_members_of_a_killed_instance_expire_with_a_left_event(fleet, clients, fleet_redis):
    a, b = fleet(2)
    r = fleet_redis.room("pr", master=1)
    alice = await clients(a.url, "alice")
    await alice.join(r)
    bob = await clients(b.url, "bob")
    await bob.join(r)
    b.kill()
    await async_wait_for(
        lambda: any(p.get("left", {}).get("name") == "bob" for p in alice.events["presence"]),
        timeout=30,
        what="bob's presence to expire after SIGKILL",
    )
    members = (await alice.call("join", {"room": r}))["members"]
    assert [m["name"] for m in members] == ["alice"]


async def test_a_client_id_resent_to_another_instance_is_not_duplicated(fleet, clients, fleet_redis):
    a, b = fleet(2)
    r = fleet_redis.room("dd", master=2)
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


async def test_a_client_resumes_on_another_instance_with_nothing_lost_or_doubled(fleet, clients, fleet_redis):
    a, b, c = fleet(3)
    r = fleet_redis.room("res", master=0)
    sender = await clients(c.url, "sender")
    await sender.join(r)
    reader = ChatClient(a.url, "reader")
    await reader.connect()
    joined = await reader.join(r)
    acked: list[str] = []
    stream = asyncio.create_task(_send_stream(sender, r, 300, acked))
    await async_wait_for(lambda: len(reader.messages(r)) >= 80, what="some traffic before the crash")
    a.kill()  # the reader's instance dies mid-stream
    seen = reader.messages(r)
    last_id = seen[-1]["id"]
    resumed = ChatClient(b.url, "reader")
    await resumed.connect()
    ack = await resumed.join(r, since=last_id, rev=joined["rev"])  # messages and changes since
    await stream
    await async_wait_for(lambda: len(seen) + len(ack["history"]) + len(resumed.messages(r)) >= 300, what="catch-up")
    got = [m["text"] for m in seen + ack["history"] + resumed.messages(r)]
    assert got == acked == [f"m{i:04d}" for i in range(300)], "no loss, no duplicates, in order"
    await resumed.close()


async def test_killing_redis_pubsub_links_loses_nothing_for_plain_clients(fleet, clients, fleet_redis):
    a, b = fleet(2)
    r = fleet_redis.room("ps", master=1)
    sender = await clients(a.url, "sender")
    await sender.join(r)
    plain = await clients(b.url, "plain")  # knows nothing of seq; relies on the server's relay
    await plain.join(r)
    acked: list[str] = []
    stream = asyncio.create_task(_send_stream(sender, r, 200, acked))
    for _ in range(3):
        await async_wait_for(lambda n=len(plain.messages(r)): len(plain.messages(r)) > n + 20, what="traffic")
        fleet_redis.kill_pubsub_links()  # over the cluster: the sharded links on every master
    await stream
    await async_wait_for(lambda: len(plain.messages(r)) >= len(acked), timeout=20, what="relay to fill the gaps")
    assert plain.texts(r) == acked
    assert [m["seq"] for m in plain.messages(r)] == list(range(1, len(acked) + 1))
    # every lost link was noticed, and followed by a sweep of the store
    assert scrape(b.url, "fleetchat_pubsub_reconnects_total") >= 3
    if fleet_redis.cluster is None:
        # what pub/sub lost meanwhile came back from the store, and is counted (the standalone
        # listener waits before it subscribes again, so something is always lost; a cluster's
        # sharded links are taken again at once, and often nothing is)
        assert scrape(b.url, "fleetchat_relay_replayed_total") > 0


@pytest.mark.redis_modes("standalone")
async def test_redis_restart_mid_stream_loses_nothing_acknowledged(fleet, clients, private_redis, fleet_redis):
    """The whole Redis goes away and comes back. Standalone only: over a cluster the same
    fault is one master lost and restarted, in test_cluster.py (its rooms are refused,
    then served again with nothing acknowledged lost; the other masters' rooms never stop)."""
    a, b = fleet(2, redis=private_redis)
    r = fleet_redis.room()
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


async def test_a_mention_is_notified_to_the_user_on_another_instance(fleet, clients, workers, fleet_redis):
    a, b = fleet(2)
    workers("w-mention")
    r = fleet_redis.room("men", master=2)
    alice = await clients(a.url, "alice")
    await alice.join(r)
    bob = await clients(b.url, "Bob")  # not even in the room
    sent = await alice.send(r, "hey @bob, look")
    await async_wait_for(lambda: bob.events["notification"], timeout=20, what="notification")
    note = bob.events["notification"][0]
    assert note["kind"] == "mention" and note["room"] == r and note["message"]["id"] == sent["id"]
    assert not alice.events["notification"]


async def test_a_mention_in_a_private_room_never_carries_it_outside(fleet, clients, workers, fleet_redis):
    from tests.support import new_account

    a, b = fleet(2)
    workers("w-private")
    owner, member, outsider = (new_account(a.url) for _ in range(3))
    boss = await clients(a.url, owner["user"]["username"], token=owner["token"])
    friend = await clients(b.url, member["user"]["username"], token=member["token"])
    stranger = await clients(b.url, outsider["user"]["username"], token=outsider["token"])
    r = fleet_redis.room("priv", master=1)
    await boss.call("create", {"room": r, "private": True})
    await boss.call("invite", {"room": r, "user": member["user"]["username"]})
    await boss.join(r)
    await friend.join(r)
    await boss.send(r, f"@{member['user']['username']} @{outsider['user']['username']} secret at noon")
    await async_wait_for(lambda: friend.events["notification"], timeout=20, what="the member is notified")
    await boss.send(r, f"@{outsider['user']['username']} one more")
    await async_wait_for(lambda: len(friend.events["notification"]) == 2, timeout=20, what="the second one")
    assert not stranger.events["notification"] and "secret" not in str(stranger.events)


async def test_a_restarted_worker_notifies_each_mention_exactly_once(fleet, clients, workers, fleet_redis):
    (a,) = fleet(1)
    r = fleet_redis.room("wr", master=0)
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


async def test_the_per_user_rate_limit_holds_across_instances(fleet, clients, fleet_redis):
    # a bucket of 4 that refills one token per 100 s: nothing refills while this runs
    a, b = fleet(2, CHAT_RATE="0.01", CHAT_RATE_BURST="4")
    rooms = fleet_redis.rooms(2, "rl")  # over the cluster, on two masters (the user's bucket on a third slot)
    here = await clients(a.url, "flooder")  # one user (a guest name), two tabs on two instances
    there = await clients(b.url, "flooder")
    for r in rooms:
        await here.join(r)
        await there.join(r)
    acks = []
    for n in range(6):
        acks.append(await here.send(rooms[n % 2], f"a{n}"))
        acks.append(await there.send(rooms[(n + 1) % 2], f"b{n}"))
    assert [bool(x.get("ok")) for x in acks] == [True] * 4 + [False] * 8, acks
    assert {x["error"] for x in acks[4:]} == {"rate_limited"}
    # each tab sent only 2 of its own burst of 4: the user's fleet-wide bucket refused the rest
    history = [await here.call("history", {"room": r, "limit": 10}) for r in rooms]
    assert sorted(m["text"] for h in history for m in h["messages"]) == ["a0", "a1", "b0", "b1"]


async def test_sigterm_hands_clients_to_another_instance_without_waiting_out_the_grace_period(backends, fleet_redis):
    # A 60 s grace period: without the drain, hypercorn would keep the socket
    # open (and the process alive) for all of it.
    env = {**FLEET_ENV, "REDIS_URL": fleet_redis.url}
    a = backends(env=env, graceful_timeout=60)
    b = backends(env=env)
    r = fleet_redis.room()
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
