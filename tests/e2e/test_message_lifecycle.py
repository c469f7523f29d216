"""Editing, deleting, reacting and replying in the browser, seen live by another tab
and by a tab that was away when it happened."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.test_chat import enter_room, exactly, fresh_room, send

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def message(page: Any, text: str) -> Any:
    """The message bubble whose text is exactly ``text``."""
    return page.locator(".msg", has=page.locator(".msg-text", has_text=exactly(text)))


def test_edit_react_reply_and_delete_reach_the_other_tab(open_tab: Callable[..., Any], artifacts_dir: Path) -> None:
    room = fresh_room()
    alice, bob = open_tab("alice"), open_tab("bob")
    enter_room(alice, room)
    enter_room(bob, room)
    send(alice, "teh plan is <b>ready</b>")
    expect(message(bob, "teh plan is <b>ready</b>")).to_have_count(1)

    mine = message(alice, "teh plan is <b>ready</b>")
    mine.hover()
    mine.locator(".msg-edit").click()
    alice.fill("#edit-input", "the plan is <b>ready</b>")
    alice.press("#edit-input", "Enter")
    expect(message(bob, "the plan is <b>ready</b>").locator(".msg-edited")).to_have_text("(edited)")
    expect(bob.locator(".msg-text", has_text="teh plan")).to_have_count(0)
    expect(bob.locator("#messages b")).to_have_count(0)  # still text, never markup

    theirs = message(bob, "the plan is <b>ready</b>")
    theirs.hover()
    expect(theirs.locator(".msg-edit")).to_have_count(0)  # not bob's to edit
    expect(theirs.locator(".msg-delete")).to_have_count(0)
    theirs.locator(".msg-react[title='React with 👍']").click()
    chip = message(alice, "the plan is <b>ready</b>").locator(".msg-reaction")
    expect(chip).to_have_text("👍 1")
    chip.click()  # alice adds hers to the same emoji
    expect(message(bob, "the plan is <b>ready</b>").locator(".msg-reaction")).to_have_text("👍 2")
    expect(message(alice, "the plan is <b>ready</b>").locator(".msg-reaction.mine")).to_have_count(1)

    theirs.hover()
    theirs.locator(".msg-reply").click()
    expect(bob.locator("#replying-to")).to_have_text("alice: the plan is <b>ready</b>")
    send(bob, "count me in")
    expect(bob.locator("#replying-to")).to_have_count(0)
    reply = message(alice, "count me in")
    expect(reply.locator(".msg-quote")).to_contain_text("the plan is <b>ready</b>")
    alice.screenshot(path=artifacts_dir / "lifecycle-edited-reacted-replied.png")

    alice.once("dialog", lambda dialog: dialog.accept())
    mine = message(alice, "the plan is <b>ready</b>")
    mine.hover()
    mine.locator(".msg-delete").click()
    expect(bob.locator(".msg-deleted")).to_have_text(["message deleted"])
    expect(bob.locator("#messages")).not_to_contain_text("the plan")
    expect(message(bob, "count me in").locator(".msg-quote")).to_contain_text("message deleted")
    expect(bob.locator(".msg-reaction")).to_have_count(0)


def test_a_tab_that_was_away_sees_the_changes_made_meanwhile(open_tab: Callable[..., Any]) -> None:
    room = fresh_room()
    alice, bob = open_tab("alice"), open_tab("bob")
    enter_room(alice, room)
    enter_room(bob, room)
    for text in ("first draft", "keep me", "remove me"):
        send(alice, text)
    expect(bob.locator(".msg-text")).to_have_text(["first draft", "keep me", "remove me"])

    bob.goto("about:blank")  # the tab is away; its session storage stays
    first = message(alice, "first draft")
    first.hover()
    first.locator(".msg-edit").click()
    alice.fill("#edit-input", "final text")
    alice.press("#edit-input", "Enter")
    expect(message(alice, "final text")).to_have_count(1)
    alice.once("dialog", lambda dialog: dialog.accept())
    gone = message(alice, "remove me")
    gone.hover()
    gone.locator(".msg-delete").click()
    expect(alice.locator(".msg-deleted")).to_have_count(1)
    kept = message(alice, "keep me")
    kept.hover()
    kept.locator(".msg-react[title='React with 🎉']").click()
    expect(kept.locator(".msg-reaction")).to_have_text("🎉 1")

    bob.goto("/")
    expect(bob.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    expect(bob.locator(".msg-text")).to_have_text(["final text", "keep me", "message deleted"])
    expect(message(bob, "keep me").locator(".msg-reaction")).to_have_text("🎉 1")
