"""The UI tier scaled out: two Reflex UI processes and the web fleet behind one nginx (`make fleet`).

A tab's chat connection goes from the browser to the web fleet, and the page
keeps no socket to its UI process, so a UI process only serves the page:
tabs served by different UI processes chat, and killing a UI process costs
its tabs nothing.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.test_chat import enter_room, exactly, fresh_room, send, texts
from tests.support import LocalFleet

pytestmark = [pytest.mark.e2e, pytest.mark.fleet, pytest.mark.xdist_group("e2e")]


@pytest.fixture(scope="module")
def ui_fleet() -> Iterator[LocalFleet]:
    fleet = LocalFleet(ui_processes=2).start()
    yield fleet
    fleet.stop()


def open_tab_on(context: Any, fleet: LocalFleet, name: str, avoid: str | None = None) -> tuple[Any, str]:
    """Open a tab through nginx; returns it and the UI process that served its page.

    With `avoid`, reload until another UI process serves it (nginx goes round robin).
    """
    ports = {str(info["port"]): ui for ui, info in fleet.ui().items()}
    page = context.new_page()
    for _ in range(10):
        response = page.goto("/")
        upstream = response.headers.get("x-upstream", "")
        served_by = ports.get(upstream.rsplit(":", 1)[-1], "")
        assert served_by, f"the page came from {upstream!r}, not a UI process ({ports})"
        if served_by != avoid:
            break
    else:
        raise AssertionError(f"nginx served every load from {avoid}")
    page.fill("#name-input", name)
    page.click("#name-submit")
    expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    return page, served_by


def test_tabs_on_two_ui_processes_chat_and_outlive_a_killed_ui_process(
    browser: Any, ui_fleet: LocalFleet, artifacts_dir: Path
) -> None:
    context = browser.new_context(base_url=ui_fleet.lb_url, viewport={"width": 1100, "height": 720})
    context.set_default_timeout(20_000)
    try:
        alice, alice_ui = open_tab_on(context, ui_fleet, "alice")
        bob, bob_ui = open_tab_on(context, ui_fleet, "bob", avoid=alice_ui)
        assert alice_ui != bob_ui
        room = fresh_room()
        enter_room(alice, room)
        enter_room(bob, room)
        send(alice, "from a tab of one UI process")
        expect(bob.locator(".msg-text", has_text=exactly("from a tab of one UI process"))).to_have_count(1)
        send(bob, "from a tab of the other")
        expect(alice.locator(".msg-text", has_text=exactly("from a tab of the other"))).to_have_count(1)

        # Alice's UI process dies mid-conversation: her tab keeps chatting.
        os.killpg(ui_fleet.ui()[alice_ui]["pid"], signal.SIGKILL)
        send(bob, "said after the UI process died")
        expect(alice.locator(".msg-text", has_text=exactly("said after the UI process died"))).to_have_count(1)
        send(alice, "alice answers all the same")
        expect(bob.locator(".msg-text", has_text=exactly("alice answers all the same"))).to_have_count(1)
        expect(alice.locator("#conn-badge")).to_have_attribute("data-status", "connected")

        # A reload is served by the process still up; the tab resumes with nothing lost or doubled.
        alice.reload()
        expect(alice.locator("#conn-badge")).to_have_attribute("data-status", "connected")
        expect(alice.locator("#room-title")).to_have_text(f"# {room}")
        send(bob, "after alice reloaded")
        expected = [
            "from a tab of one UI process",
            "from a tab of the other",
            "said after the UI process died",
            "alice answers all the same",
            "after alice reloaded",
        ]
        for page in (alice, bob):
            expect(page.locator(".msg-text", has_text=exactly("after alice reloaded"))).to_have_count(1)
            assert texts(page) == expected
        alice.screenshot(path=artifacts_dir / "ui-fleet-alice-after-her-ui-process-died.png")
    finally:
        context.close()
