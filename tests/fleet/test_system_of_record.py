"""A fleet over Redis and PostgreSQL: Redis keeps a window of each room, the archiver
copies every event into PostgreSQL, and nothing acknowledged is ever out of reach."""

from __future__ import annotations

import uuid

import pytest

from backend import redis_client
from backend.db.migrate import upgrade
from tests.support import PostgresServer, async_wait_for, http_get

WINDOW = 100


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    url = postgres.create_database("t" + uuid.uuid4().hex[:12])
    upgrade(url)
    return url


@pytest.fixture
def recorded_fleet(fleet, workers, database: str):
    """Two instances and an archiving worker over the test's (emptied) Redis and a fresh database."""
    env = {"DATABASE_URL": database, "CHAT_REDIS_WINDOW": str(WINDOW)}
    instances = fleet(2, **env)
    workers("archiver", **env)
    return instances


async def archived(redis_url: str, name: str) -> int:
    r = await redis_client.connect(redis_url)
    try:
        return int(await r.get("fc:{" + name + "}:archived") or 0)
    finally:
        await r.aclose()


async def window_size(redis_url: str, name: str) -> int:
    r = await redis_client.connect(redis_url)
    try:
        return await r.hlen("fc:{" + name + "}:msgs")
    finally:
        await r.aclose()


async def send_many(client, r: str, n: int, prefix: str = "m") -> list[dict]:
    acks = []
    for i in range(n):
        ack = await client.send(r, f"{prefix}{i:04d}", client_id=f"{prefix}{i}")
        assert ack["ok"], ack
        acks.append(ack)
    return acks


async def test_a_room_pages_back_to_its_first_message_while_redis_keeps_a_window(recorded_fleet, clients, fleet_redis):
    a, b = recorded_fleet
    r = fleet_redis.room("sor", master=0)
    sender = await clients(a.url, "sender")
    await sender.join(r)
    await send_many(sender, r, 1000)
    await async_wait_for(lambda: archived(fleet_redis.url, r), what="the archiver to start")

    async def archived_all() -> bool:
        return await archived(fleet_redis.url, r) == 1000

    await async_wait_for(archived_all, timeout=30, what="every message archived")
    await send_many(sender, r, 100, prefix="late")  # the next trims run with everything archived
    assert await window_size(fleet_redis.url, r) <= WINDOW + 200, "Redis keeps only a window"

    reader = await clients(b.url, "reader")
    ack = await reader.join(r)
    texts = [m["text"] for m in ack["history"]]
    before = ack["history"][0]["id"]
    while True:
        page = await reader.call("history", {"room": r, "before": before, "limit": 200})
        assert page["ok"], page
        if not page["messages"]:
            break
        texts = [m["text"] for m in page["messages"]] + texts
        before = page["messages"][0]["id"]
    assert texts == [f"m{i:04d}" for i in range(1000)] + [f"late{i:04d}" for i in range(100)]
    status, body = http_get(f"{a.url}/api/rooms/{r}/messages?before=000000000003&limit=5")
    assert status == 200 and b'"m0000"' in body and b'"m0001"' in body


async def test_an_archived_message_can_still_be_edited_and_everyone_sees_it(recorded_fleet, clients, fleet_redis):
    a, b = recorded_fleet
    r = fleet_redis.room("sor", master=1)
    author = await clients(a.url, "author")
    await author.join(r)
    first = (await send_many(author, r, 400))[0]

    async def trimmed() -> bool:
        await author.send(r, "tick")
        return await window_size(fleet_redis.url, r) < 400

    await async_wait_for(trimmed, timeout=30, what="the first messages to leave the window")
    watcher = await clients(b.url, "watcher")
    await watcher.join(r)
    ack = await author.call("edit", {"room": r, "id": first["id"], "text": "edited long after"})
    assert ack["ok"] and ack["message"]["text"] == "edited long after"
    await async_wait_for(lambda: watcher.events["update"], what="the watcher sees the edit")
    page = await watcher.call("history", {"room": r, "before": "000000000002", "limit": 1})
    assert page["messages"][0]["text"] == "edited long after"


async def test_after_redis_loses_everything_seq_continues_from_the_archive(recorded_fleet, clients, fleet_redis):
    a, b = recorded_fleet
    r = fleet_redis.room("sor", master=2)
    sender = await clients(a.url, "sender")
    reader = await clients(b.url, "reader")
    await sender.join(r)
    await reader.join(r)
    await send_many(sender, r, 150)

    async def archived_all() -> bool:
        return await archived(fleet_redis.url, r) == 150

    await async_wait_for(archived_all, timeout=30, what="every message archived")
    fleet_redis.flush()  # over the cluster: every master
    ack = await sender.send(r, "after the loss", client_id="after-1")
    while not ack["ok"]:
        ack = await sender.send(r, "after the loss", client_id="after-1")
    assert ack["seq"] == 151, "a seq the archive holds is never handed out again"
    for client in (sender, reader):
        await async_wait_for(lambda c=client: c.events["epoch"], what=f"{client.name} told of the new epoch")
        assert client.events["epoch"][0]["kept_seq"] == 150
        await async_wait_for(lambda c=client: c.texts(r)[-1:] == ["after the loss"], what="live delivery")
        assert [m["seq"] for m in client.messages(r)][-2:] == [150, 151]
    page = await reader.call("history", {"room": r, "limit": 3})
    assert [m["text"] for m in page["messages"]] == ["m0148", "m0149", "after the loss"]


async def test_read_marks_survive_a_redis_data_loss(recorded_fleet, clients, fleet_redis):
    from tests.security.helpers import request
    from tests.support import new_account

    a, _ = recorded_fleet
    r = fleet_redis.room("sor", master=1)
    me = new_account(a.url)
    client = await clients(a.url, me["user"]["username"], token=me["token"])
    await client.join(r)
    await send_many(client, r, 10)
    assert (await client.call("read", {"room": r, "seq": 6}))["read_seq"] == 6

    async def archived_all() -> bool:
        return await archived(fleet_redis.url, r) == 10

    await async_wait_for(archived_all, timeout=30, what="the messages archived")
    await async_wait_for(
        lambda: http_get(a.url + "/metrics")[1].count(b"fleetchat_archive_lag 0.0") == 1,
        timeout=30,
        what="the archiver to catch up",
    )
    fleet_redis.flush()  # over the cluster: every master
    await client.close()
    # the sign-in sessions were in Redis: sign in again (the account is in PostgreSQL)
    login = {"username": me["user"]["username"], "password": "correct horse battery"}
    status, _, body = request(a.url + "/api/auth/login", "POST", login)
    assert status == 200, body
    client = await clients(a.url, me["user"]["username"], token=body["token"])
    ack = await client.join(r)
    while not ack.get("ok"):
        ack = await client.call("join", {"room": r})
    assert (ack["read_seq"], ack["unread"]) == (6, 4)
