"""Search asks ``Chat.readable`` which rooms it may look in and never looks elsewhere;
and the pieces it is made of: words, highlight segments, the cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import socketio

from backend import search
from backend.chat import Chat
from backend.config import Settings
from backend.metrics import Metrics
from backend.models import ChatError, SearchRequest
from backend.presence import MemoryPresence, User
from backend.store.sqlite import SqliteStore

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
    for bad in ("3", "x:1", f"{search.WINDOW}:1"):
        with pytest.raises(ChatError):
            search.Cursor.parse(bad)
    with pytest.raises(ChatError):
        search.Cursor.parse("0:" + "9" * 19).numbers(1)
