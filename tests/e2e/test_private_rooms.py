"""Direct messages and private rooms in the browser: three accounts in three browsers."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ChatBackend, ReflexApp
from tests.e2e.test_accounts import create_account, new_username, signed_in_browsers
from tests.e2e.test_chat import exactly, fresh_room, send

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def test_a_dm_and_a_private_room_that_a_third_account_cannot_see(
    browser: Any, reflex_app: ReflexApp, chat_backend: ChatBackend
) -> None:
    people = {"Ada": new_username(), "Bob": new_username(), "Eve": new_username()}
    for display, username in people.items():
        create_account(chat_backend, username, display)
    with signed_in_browsers(browser, reflex_app.url, list(people.values())) as (ada, bob, eve):
        ada.fill("#dm-input", people["Bob"])
        ada.press("#dm-input", "Enter")
        expect(ada.locator("#room-title")).to_have_text("@ Bob")
        send(ada, "just between us")
        expect(bob.locator("#dm-list .room-item")).to_contain_text("@ Ada")
        bob.locator("#dm-list .room-item").click()
        expect(bob.locator(".msg-text", has_text=exactly("just between us"))).to_have_count(1)
        expect(ada.locator(".msg-seen")).to_have_text("Seen")  # bob's read receipt
        expect(eve.locator("#dm-list .room-item")).to_have_count(0)

        room = fresh_room()
        ada.fill("#new-room-input", room)
        ada.check("#new-room-private")
        ada.click("#new-room-submit")
        expect(ada.locator("#room-title")).to_have_text(f"🔒 {room}")
        ada.fill("#invite-input", people["Bob"])
        ada.click("#invite-submit")
        expect(ada.locator("#invite-status")).to_contain_text("can now read")
        send(ada, "the private plan")
        bob_room = bob.locator(f".room-item[data-room='{room}']")
        expect(bob_room).to_contain_text(f"🔒 {room}")
        bob_room.click()
        expect(bob.locator(".msg-text", has_text=exactly("the private plan"))).to_have_count(1)

        eve.reload()
        expect(eve.locator("#conn-badge")).to_have_attribute("data-status", "connected")
        expect(eve.locator(f".room-item[data-room='{room}']")).to_have_count(0)
        eve.fill("#new-room-input", room)
        eve.click("#new-room-submit")
        expect(eve.get_by_text("members only").first).to_be_visible()
        expect(eve.locator("#messages")).not_to_contain_text("the private plan")
