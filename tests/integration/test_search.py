"""Search, embedded (SQLite FTS5) and in a fleet (two instances over Redis with an
archiving worker into PostgreSQL): ranked, highlighted, re-indexed on edits, deleted
messages gone, narrowed to a room, paged, and refused clearly when asked wrongly."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from backend.db.migrate import upgrade
from tests.security.helpers import request
from tests.support import FLEET_ENV, ROOT, Backend, ChatClient, PostgresServer, RedisServer, async_wait_for, new_account


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def urls(request: pytest.FixtureRequest, postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    """One backend, or two instances and an archiver over a private Redis and a fresh database."""
    started: list[Backend] = []
    worker: subprocess.Popen[bytes] | None = None
    redis: RedisServer | None = None
    if request.param == "embedded":
        started.append(Backend(env=FLEET_ENV).start())
    else:
        redis = RedisServer()
        redis.start()
        database = postgres.create_database("search" + uuid.uuid4().hex[:10])
        upgrade(database)
        env = {**FLEET_ENV, "REDIS_URL": redis.url, "DATABASE_URL": database}
        started = [Backend(env=env).start() for _ in range(2)]
        worker_env = {**os.environ, **env, "CHAT_WORKER_NAME": "archiver"}
        worker = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, env=worker_env)
    yield started[0].url, started[-1].url
    for backend in started:
        backend.kill()
    if worker is not None:
        worker.kill()
        worker.wait()
    if redis is not None:
        redis.stop()


@pytest.fixture
async def connect(urls: tuple[str, str]) -> AsyncIterator[Callable[..., Any]]:
    made: list[ChatClient] = []

    async def make(url: str, name: str, **auth: Any) -> ChatClient:
        client = await ChatClient(url, name, **auth).connect()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def word() -> str:
    """A word no other test's messages have."""
    return "w" + uuid.uuid4().hex[:10]


def room() -> str:
    return "search-" + uuid.uuid4().hex[:8]


async def found(client: ChatClient, texts: set[str], **query: Any) -> dict[str, Any] | None:
    """The search's answer once its hits' texts are exactly ``texts`` (the fleet archives within a second)."""
    ack = await client.call("search", query)
    if ack.get("error") == "rate_limited":
        return None
    assert ack["ok"], ack
    return ack if {m["text"] for m in ack["messages"]} == texts else None


async def settled(client: ChatClient, texts: set[str], **query: Any) -> dict[str, Any]:
    return await async_wait_for(lambda: found(client, texts, **query), interval=0.3, what=f"search for {texts}")


async def test_results_are_ranked_and_highlighted_as_plain_text_segments(urls, connect):
    w, r = word(), room()
    author = await connect(urls[0], "author")
    await author.join(r)
    texts = [f"once {w} here", f"{w} {w} {w} thrice", "nothing to see", f"<b>{w.upper()}</b> & more"]
    for text in texts:
        assert (await author.send(r, text))["ok"]
    reader = await connect(urls[1], "reader")
    ack = await settled(reader, {texts[0], texts[1], texts[3]}, q=w)
    assert ack["messages"][0]["text"] == texts[1], "the message with the word three times ranks first"
    assert ack["more"] is False and ack["next"] is None
    hit = next(m for m in ack["messages"] if m["text"] == texts[3])
    assert hit["highlight"] == [
        {"text": "<b>", "match": False},
        {"text": w.upper(), "match": True},
        {"text": "</b> & more", "match": False},
    ], "markup in a message stays text, the match is found case-insensitively"
    assert {"id", "seq", "room", "user", "ts", "cursor"} <= set(hit) and hit["room"] == r
    assert hit["user"]["name"] == "author"
    two = await reader.call("search", {"q": f"thrice {w}"})
    assert [m["text"] for m in two["messages"]] == [texts[1]], "every word must match"
    assert [s["text"] for s in two["messages"][0]["highlight"] if s["match"]] == [w, w, w, "thrice"]


async def test_an_edit_is_found_by_its_new_text_and_a_deleted_message_vanishes(urls, connect):
    old, new, gone, r = word(), word(), word(), room()
    me = new_account(urls[0])
    author = await connect(urls[0], me["user"]["username"], token=me["token"])
    await author.join(r)
    edited = await author.send(r, f"first draft {old}")
    deleted = await author.send(r, f"regrettable {gone}")
    await settled(author, {f"regrettable {gone}"}, q=gone)
    await settled(author, {f"first draft {old}"}, q=old)
    assert (await author.call("edit", {"room": r, "id": edited["id"], "text": f"final {new}"}))["ok"]
    assert (await author.call("delete", {"room": r, "id": deleted["id"]}))["ok"]
    reader = await connect(urls[1], "reader")
    await settled(reader, set(), q=old)
    hit = (await settled(reader, {f"final {new}"}, q=new))["messages"][0]
    assert hit["edited_ts"] and hit["id"] == edited["id"], "a hit is the message's current state"
    await settled(reader, set(), q=gone)


async def test_room_narrows_the_search_and_before_pages_through_every_hit(urls, connect):
    w, r1, r2 = word(), room(), room()
    sender = await connect(urls[0], "sender")
    await sender.join(r1)
    await sender.join(r2)
    for i in range(5):
        await sender.send(r1, f"{w} in one {i}")
    await sender.send(r2, f"{w} in two")
    reader = await connect(urls[1], "reader")
    everywhere = {f"{w} in one {i}" for i in range(5)} | {f"{w} in two"}
    await settled(reader, everywhere, q=w)
    narrowed = await reader.call("search", {"q": w, "room": r1})
    assert {m["room"] for m in narrowed["messages"]} == {r1} and len(narrowed["messages"]) == 5

    seen: list[str] = []
    pages = []
    before = None
    while True:
        query = {"q": w, "limit": 2} | ({"before": before} if before else {})
        page = await reader.call("search", query)
        assert page["ok"], page
        pages.append(len(page["messages"]))
        seen += [m["text"] for m in page["messages"]]
        if not page["more"]:
            break
        assert page["next"] == page["messages"][-1]["cursor"]
        before = page["next"]
    assert pages == [2, 2, 2] and sorted(seen) == sorted(everywhere), "each hit once, none left out"

    status, _, body = request(f"{urls[1]}/api/search?q={w}&room={r2}", headers=bearer(urls[1]))
    assert status == 200, body
    assert [m["text"] for m in body["messages"]] == [f"{w} in two"] and body["more"] is False
    assert body["messages"][0]["highlight"][0] == {"text": w, "match": True}


def bearer(url: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + new_account(url)["token"]}


async def test_bad_queries_are_refused_clearly(urls, connect):
    client = await connect(urls[0], "asker")
    for bad, where in (
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "?!"}, "q"),
        ({"q": "x" * 1000}, "q"),
        ({"q": 123}, "q"),
        ({"q": "hi", "limit": "5"}, "limit"),
        ({"q": "hi", "limit": 0}, "limit"),
        ({"q": "hi", "limit": 101}, "limit"),
        ({"q": "hi", "room": "Not A Room!"}, "room"),
        ({"q": "hi", "before": "garbage"}, "before"),
        ({"q": "hi", "before": 5}, "before"),
    ):
        ack = await client.call("search", bad)
        assert ack["ok"] is False and ack["error"] == "bad_request", (bad, ack)
        assert ack["detail"].startswith(where), (bad, ack)
    ack = await client.call("search", "hi")
    assert ack["error"] == "bad_request"
    for cursor in ("999999:", "0:x.y", "0:" + "9" * 30):
        ack = await client.call("search", {"q": "hi", "before": cursor})
        assert ack["ok"] is False and ack["error"] == "bad_request", (cursor, ack)

    headers = bearer(urls[0])
    for query in ("q=", "q=" + "x" * 1000, "q=hi&limit=zero", "q=%3F%21", "", "q=hi&before=nope"):
        status, _, body = request(f"{urls[0]}/api/search?{query}", headers=headers)
        assert status == 400 and body["error"] == "bad_request", (query, status, body)


async def test_search_needs_a_token_over_http(urls):
    status, _, body = request(f"{urls[0]}/api/search?q=hello")
    assert status == 401 and body["error"] == "unauthorized"
    status, _, body = request(f"{urls[0]}/api/search?q=hello", headers={"Authorization": "Bearer nope"})
    assert status == 401


async def test_searches_are_rate_limited_per_connection(urls, connect):
    client = await connect(urls[0], "eager")
    acks = [await client.call("search", {"q": "anything"}) for _ in range(40)]
    assert acks[0]["ok"]
    limited = [a for a in acks if not a["ok"]]
    assert limited and all(a["error"] == "rate_limited" for a in limited)
    other = await connect(urls[0], "patient")
    assert (await other.call("search", {"q": "anything"}))["ok"], "another connection has its own bucket"


async def test_the_route_is_documented(urls):
    status, _, spec = request(f"{urls[0]}/openapi.json")
    assert status == 200
    route = spec["paths"]["/api/search"]["get"]
    assert {p["name"] for p in route["parameters"]} >= {"q", "room", "before", "limit"}
    assert {"200", "400", "401", "403"} <= set(route["responses"])


def test_a_quoted_query_is_only_words(urls):
    """FTS5 and tsquery syntax in a query is text to search for, never syntax."""
    headers = bearer(urls[0])
    for q in ('"unbalanced', "a OR b NOT c*", "col:thing", "x & !y | (z", "NEAR(a b)"):
        status, _, body = request(f"{urls[0]}/api/search?q={urllib.parse.quote(q)}", headers=headers)
        assert status == 200 and body["ok"], (q, body)
