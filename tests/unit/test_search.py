"""Search asks ``Chat.readable`` which rooms it may look in and never looks elsewhere;
and the pieces it is made of: words, highlight segments, the cursor."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import socketio

from backend import search
from backend.chat import Chat
from backend.config import Settings
from backend.db.archive import Archive
from backend.db.migrate import upgrade
from backend.lifecycle import Change
from backend.metrics import Metrics
from backend.models import ChatError, SearchRequest
from backend.presence import MemoryPresence, User
from backend.store.sqlite import SqliteStore
from tests.dbhelpers import changed, sent

ALICE: User = {"id": "u-alice", "name": "alice"}


class PrivateChat(Chat):
    """A chat whose ``readable`` keeps ``secret`` from everyone, as private rooms will."""

    async def readable(self, user: User, rooms: list[str]) -> list[str]:
        return [r for r in rooms if r != "secret"]


@pytest.fixture
async def chat() -> AsyncIterator[PrivateChat]:
    store = SqliteStore(":memory:")
    await store.open()
    chat = PrivateChat(Settings(), store, MemoryPresence(), socketio.AsyncServer(async_mode="asgi"), Metrics())
    for r in ("open", "secret", "other"):
        await store.append(r, ALICE, f"the plan in {r}", f"c-{r}", 1_700_000_000_000)
    yield chat
    await store.close()


async def test_search_never_returns_a_room_readable_lets_through_not(chat: PrivateChat) -> None:
    found = await chat.find(ALICE, SearchRequest(q="plan"))
    assert sorted(m["room"] for m in found["messages"]) == ["open", "other"]
    with pytest.raises(ChatError) as refused:
        await chat.find(ALICE, SearchRequest(q="plan", room="secret"))
    assert (refused.value.code, refused.value.status) == ("forbidden", 403)
    narrowed = await chat.find(ALICE, SearchRequest(q="plan", room="open"))
    assert [m["room"] for m in narrowed["messages"]] == ["open"]


async def test_the_search_event_goes_through_readable_too(chat: PrivateChat) -> None:
    chat.open_connection("sid-1", ALICE)
    ack = await chat.search("sid-1", {"q": "secret"})
    assert ack == {"ok": True, "messages": [], "more": False, "next": None}, "not even the room's own name finds it"
    with pytest.raises(ChatError) as refused:
        await chat.search("sid-1", {"q": "plan", "room": "secret"})
    assert refused.value.code == "forbidden"


def test_words_and_highlight_segments() -> None:
    assert search.terms("Hello, HELLO wörld_x 42!") == ["hello", "wörld", "x", "42"]
    assert search.terms("?! -- ") == []
    assert search.highlight("<i>Hello</i> hell", ["hello"]) == [
        {"text": "<i>", "match": False},
        {"text": "Hello", "match": True},
        {"text": "</i> hell", "match": False},
    ]
    assert search.highlight("", ["x"]) == []


def test_a_cursor_is_only_what_the_server_gave() -> None:
    assert search.Cursor.parse(None) == search.Cursor(0, "")
    assert search.Cursor.parse("3:17.4.general").numbers(2) == [17, 4]
    rowid = 1_800_000_000_000 * 2**20  # an FTS5 rowid of today's clock: 19 digits
    assert search.Cursor.parse(f"0:{rowid}").numbers(1) == [rowid]
    for bad in ("3", "x:1", f"{search.WINDOW}:1"):
        with pytest.raises(ChatError):
            search.Cursor.parse(bad)
    with pytest.raises(ChatError):
        search.Cursor.parse("0:" + str(2**63)).numbers(1)


Search = Callable[..., Awaitable[tuple[list[dict[str, Any]], bool]]]
"""``search(query, rooms, before, limit)`` of one store."""


@pytest.fixture(params=["sqlite", "postgres"])
async def windowed(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Search, Callable[[str, int, str, str | None], Awaitable[None]]]]:
    """A store (the embedded FTS5 file, or the archive over PostgreSQL) whose windows are
    4 matches, and how to write to it: (room, seq, kind, text) with kind "send", "edit"
    or "delete", seq counting up from 1 in each room."""
    monkeypatch.setattr(search, "WINDOW", 4)
    if request.param == "sqlite":
        store = SqliteStore(str(tmp_path / "chat.db"))
        await store.open()

        async def write_sqlite(room: str, seq: int, kind: str, text: str | None) -> None:
            if kind == "send":
                await store.append(room, ALICE, text or "", f"c-{room}-{seq}", 1_700_000_000_000 + seq)
            else:
                await store.change(Change(room, seq, kind, ALICE, uuid.uuid4().hex, 1_800_000_000_000, text or ""))  # type: ignore[arg-type]

        yield store.search, write_sqlite
        await store.close()
        return
    url = request.getfixturevalue("postgres").create_database("w" + uuid.uuid4().hex[:12])
    upgrade(url)
    archive = Archive(url)
    await archive.open()
    revs = iter(range(1, 1000))

    async def write_pg(room: str, seq: int, kind: str, text: str | None) -> None:
        event = sent(room, seq, text=text) if kind == "send" else changed(room, seq, next(revs), kind, text=text)
        await archive.write([event])

    yield archive.search, write_pg
    await archive.close()


async def every_page(find: Search, query: str, rooms: list[str], limit: int) -> list[list[tuple[str, str]]]:
    """Each page's (room, text) of a search paged with ``before`` to its end."""
    pages, before = [], None
    while True:
        hits, more = await find(query, rooms, before, limit)
        pages.append([(h["room"], h["text"]) for h in hits])
        if not more:
            return pages
        before = hits[-1]["cursor"] if hits else before


async def test_a_room_is_ranked_in_windows_of_its_newest_matches(windowed) -> None:
    """The rule in both stores, with one room or many: the WINDOW newest matches are
    ranked together; an older, better match comes in a later window, and a query
    specific enough to leave it among the newest finds it first; edits re-index,
    deletes vanish, and the other room never shows."""
    find, write = windowed
    texts = ["plum plum plum orchard"] + [f"plum tart {i} with cream on top" for i in range(2, 10)]
    for seq, body in enumerate(texts, 1):
        await write("a", seq, "send", body)
        await write("b", seq, "send", f"plum in b {seq}")
    await write("a", 7, "edit", "plum plum sauce")
    await write("a", 8, "delete", None)
    for rooms in (["a"], ["a", "c"]):
        pages = await every_page(find, "plum", rooms, 3)
        seen = [hit for page in pages for hit in page]
        assert {room for room, _ in seen} == {"a"}, "only the rooms asked for"
        expected = {("a", t) for t in [*texts[:6], "plum plum sauce", texts[8]]}
        assert sorted(seen) == sorted(expected) and len(seen) == len(expected), "every match once, the deleted none"
        # the first window: the 4 newest matches (seqs 9, 7, 6, 5), the re-indexed edit ranked first
        assert seen[0] == ("a", "plum plum sauce")
        assert set(seen[:4]) == {("a", texts[8]), ("a", "plum plum sauce"), ("a", texts[5]), ("a", texts[4])}
        # the oldest message ranks best of all, but only within its own (the last) window
        assert seen[4] == ("a", "plum plum plum orchard")
        specific, _ = await find("plum orchard", rooms, None, 3)
        assert [h["text"] for h in specific] == ["plum plum plum orchard"]
        assert (await find("cream", rooms, None, 20))[0][0]["highlight"][1] == {"text": "cream", "match": True}
