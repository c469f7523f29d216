"""Read state in the browser: one account in two browsers; reading a room in one
clears its unread badge in the other, and after a reload; "New messages" marks
where the unread part begins."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ChatBackend, ReflexApp, run_async
from tests.e2e.test_accounts import create_account, new_username, signed_in_browsers
from tests.e2e.test_chat import enter_room, fresh_room, post_as

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_reading_a_room_in_one_browser_clears_its_badge_in_the_other(
    browser: Any, reflex_app: ReflexApp, chat_backend: ChatBackend
) -> None:
    username = new_username()
    create_account(chat_backend, username, "Reader")
    with signed_in_browsers(browser, reflex_app.url, [username, username]) as pages:
        laptop, phone = pages
        room = fresh_room()
        for page in pages:
            enter_room(page, room)
            page.locator(".room-item[data-room='general']").click()
            expect(page.locator("#room-title")).to_have_text("# general")

        run_async(post_as(chat_backend.url, "friend", room, ["first news", "second news", "third news"]))
        for page in pages:
            expect(page.locator(f".room-item[data-room='{room}'] .unread")).to_have_text("3")

        laptop.locator(f".room-item[data-room='{room}']").click()
        expect(laptop.locator(".msg-text")).to_have_text(["first news", "second news", "third news"])
        divider = laptop.locator(".new-messages")
        expect(divider).to_have_count(1)
        expect(phone.locator(f".room-item[data-room='{room}'] .unread")).to_have_count(0)

        phone.reload()
        expect(phone.locator("#conn-badge")).to_have_attribute("data-status", "connected")
        expect(phone.locator(f".room-item[data-room='{room}']")).to_have_count(1)
        expect(phone.locator(f".room-item[data-room='{room}'] .unread")).to_have_count(0)
        run_async(post_as(chat_backend.url, "friend", room, ["fourth news"]))
        expect(phone.locator(f".room-item[data-room='{room}'] .unread")).to_have_text("1")
