"""Accounts in the browser: sign up, stay signed in, sign out, wrong passwords, guests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ChatBackend, ReflexApp
from tests.e2e.test_chat import enter_room, exactly, fresh_room, send
from tests.security.helpers import request

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

PASSWORD = "a long enough passphrase"


def new_username() -> str:
    return "e2e" + uuid.uuid4().hex[:8]


def create_account(backend: ChatBackend, username: str, display_name: str) -> None:
    body = {"username": username, "password": PASSWORD, "display_name": display_name}
    status, _, answer = request(f"{backend.url}/api/auth/signup", "POST", body)
    assert status == 201, answer


def sign_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.fill("#auth-username", username)
    page.fill("#auth-password", password)
    page.click("#auth-submit")


@contextlib.contextmanager
def signed_in_browsers(browser: Any, base_url: str, usernames: list[str]) -> Iterator[list[Any]]:
    """One browser (context) per username, each signed in and connected; closed at the end."""
    contexts = [browser.new_context(base_url=base_url) for _ in usernames]
    try:
        pages = []
        for ctx, username in zip(contexts, usernames, strict=True):
            ctx.set_default_timeout(15_000)
            page = ctx.new_page()
            page.goto("/")
            sign_in(page, username)
            expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
            pages.append(page)
        yield pages
    finally:
        for ctx in contexts:
            ctx.close()


def stored_token(page: Any) -> str:
    return page.evaluate("JSON.parse(localStorage.getItem('fleetchat.auth')).token")


def test_sign_up_stay_signed_in_across_reloads_and_tabs_then_sign_out(
    context: Any, chat_backend: ChatBackend, reflex_app: ReflexApp, artifacts_dir: Path
) -> None:
    page = context.new_page()
    page.goto("/")
    assert page.get_attribute("#auth-password", "type") == "password"
    page.screenshot(path=artifacts_dir / "sign-in.png")
    page.click("#auth-toggle")
    username = new_username()
    page.fill("#auth-username", username)
    page.fill("#auth-display-name", "Grace Hopper")
    page.fill("#auth-password", PASSWORD)
    page.click("#auth-submit")
    expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    expect(page.locator("#me")).to_have_text("Grace Hopper")
    expect(page.locator("#sign-out")).to_have_text("Sign out")
    token = stored_token(page)

    page.reload()
    expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    expect(page.locator("#me")).to_have_text("Grace Hopper")
    # Another tab of the same browser is the same person, and no guest.
    other = context.new_page()
    other.goto("/")
    expect(other.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    expect(other.locator("#me")).to_have_text("Grace Hopper")
    room = fresh_room()
    enter_room(page, room)
    send(page, "signed in for real")
    expect(page.locator(".msg-text", has_text=exactly("signed in for real"))).to_have_count(1)
    expect(page.locator(".msg-guest")).to_have_count(0)
    expect(page.locator("#member-list .member-guest")).to_have_count(0)

    page.click("#sign-out")
    expect(page.locator("#auth-submit")).to_be_visible()
    expect(other.locator("#auth-submit")).to_be_visible()  # every tab of the browser signs out
    status, _, body = request(f"{chat_backend.url}/api/me", headers={"Authorization": f"Bearer {token}"})
    assert (status, body["error"]) == (401, "unauthorized")


def test_a_wrong_password_is_shown_on_the_form(context: Any, chat_backend: ChatBackend) -> None:
    username = new_username()
    create_account(chat_backend, username, "Alan")
    page = context.new_page()
    page.goto("/")
    sign_in(page, username, "not the right one at all")
    expect(page.locator("#auth-error")).to_have_text("unknown username or wrong password")
    expect(page.locator("#conn-badge")).to_have_count(0)
    sign_in(page, username)
    expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    expect(page.locator("#me")).to_have_text("Alan")


def test_two_browsers_with_two_accounts_chat(browser: Any, reflex_app: ReflexApp, chat_backend: ChatBackend) -> None:
    names = {new_username(): "Ada", new_username(): "Edsger"}
    for username, display in names.items():
        create_account(chat_backend, username, display)
    with signed_in_browsers(browser, reflex_app.url, list(names)) as (ada, edsger):
        room = fresh_room()
        enter_room(ada, room)
        enter_room(edsger, room)
        expect(ada.locator("#member-list .member")).to_have_text(["Ada", "Edsger"])
        send(ada, "hello from one browser")
        expect(edsger.locator(".msg-text", has_text=exactly("hello from one browser"))).to_have_count(1)
        send(edsger, "and back from another")
        expect(ada.locator(".msg-text", has_text=exactly("and back from another"))).to_have_count(1)
        expect(ada.locator(".msg-user")).to_have_text(["Ada", "Edsger"])
        expect(ada.locator(".msg-guest")).to_have_count(0)


def test_a_guest_cannot_take_a_registered_name(
    context: Any, chat_backend: ChatBackend, open_tab: Callable[..., Any]
) -> None:
    username = new_username()
    create_account(chat_backend, username, "Registered")
    page = context.new_page()
    page.goto("/")
    page.fill("#name-input", username.upper())
    page.click("#name-submit")
    expect(page.locator("#name-error")).to_contain_text("registered username")
    expect(page.locator("#name-submit")).to_be_visible()
    # A guest with a free name is marked as one, for everyone in the room.
    guest = open_tab("just visiting")
    room = fresh_room()
    enter_room(guest, room)
    expect(guest.locator("#member-list .member-guest")).to_have_count(1)
    send(guest, "a guest speaks")
    expect(guest.locator(".msg-guest")).to_have_count(1)
