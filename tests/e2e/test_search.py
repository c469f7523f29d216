"""Search in the browser: a word of an old message, far above what the room shows,
is found from the header, and clicking the result shows the message in its room."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ChatBackend, run_async
from tests.e2e.test_chat import enter_room, fresh_room, post_as

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_a_search_result_opens_the_old_message_in_its_room(
    open_tab: Callable[..., Any], chat_backend: ChatBackend
) -> None:
    room, word = fresh_room(), "needle" + uuid.uuid4().hex[:8]
    old = f"the <b>{word}</b> was here long ago"
    run_async(post_as(chat_backend.url, "archivist", room, [old] + [f"filler {i:03d}" for i in range(200)]))
    page = open_tab("seeker")
    enter_room(page, "general")  # somewhere else: the result must open the room
    expect(page.locator("#messages .msg-text", has_text=word)).to_have_count(0)

    page.fill("#search-input", word)
    page.press("#search-input", "Enter")
    hit = page.locator(f".search-result[data-room='{room}']")
    expect(hit).to_have_count(1)
    expect(hit.locator(".search-room")).to_have_text(f"# {room}")
    expect(hit.locator(".search-user")).to_have_text("archivist")
    expect(hit.locator(".search-match")).to_have_text(word)
    expect(hit.locator(".search-text")).to_have_text(old)  # the markup is text, not elements
    expect(hit.locator(".search-text b")).to_have_count(0)

    hit.click()
    expect(page.locator("#room-title")).to_have_text(f"# {room}")
    found = page.locator("#messages .msg.msg-found")
    expect(found).to_have_count(1)
    expect(found.locator(".msg-text")).to_have_text(old)
    expect(found).to_be_in_viewport()
    expect(page.locator("#search-results")).to_have_count(0)
