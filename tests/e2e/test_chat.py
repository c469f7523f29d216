"""The chat as people use it: several tabs of Chromium against the real backend."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import socketio
import websockets
from playwright.sync_api import expect

from tests.e2e.conftest import ChatBackend, ReflexApp, TcpGate, http_get, run_async, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


def fresh_room() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def enter_room(page: Any, room: str) -> None:
    page.fill("#new-room-input", room)
    page.click("#new-room-submit")
    expect(page.locator("#room-title")).to_have_text(f"# {room}")
    expect(page.locator("#member-list")).to_contain_text(page.locator("#me").inner_text())


def send(page: Any, text: str) -> None:
    page.fill("#message-input", text)
    page.press("#message-input", "Enter")


def exactly(text: str) -> re.Pattern[str]:
    return re.compile(f"^{re.escape(text)}$")


def texts(page: Any) -> list[str]:
    return page.locator("#messages .msg-text").all_inner_texts()


async def post_as(backend_url: str, name: str, room: str, lines: list[str]) -> None:
    """Send messages from a plain python-socketio client, straight to the backend."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(backend_url, auth={"name": name}, transports=["websocket"], wait_timeout=10)
    try:
        ack = await client.call("join", {"room": room}, timeout=10)
        assert ack["ok"], ack
        for line in lines:
            request = {"room": room, "text": line, "client_id": uuid.uuid4().hex}
            ack = await client.call("message", request, timeout=10)
            while ack.get("error") == "rate_limited":  # a polite client waits and resends
                await asyncio.sleep(0.1)
                ack = await client.call("message", request, timeout=10)
            assert ack["ok"], ack
    finally:
        await client.disconnect()


def stored_texts(backend: ChatBackend, room: str) -> list[str]:
    _, body = http_get(f"{backend.url}/api/rooms/{urllib.parse.quote(room)}/messages?limit=200")
    return [message["text"] for message in json.loads(body)["messages"]]


def test_two_tabs_exchange_messages_both_ways(open_tab: Callable[..., Any], artifacts_dir: Path) -> None:
    room = fresh_room()
    alice, bob = open_tab("alice"), open_tab("bob")
    enter_room(alice, room)
    enter_room(bob, room)

    send(alice, "hello bob, this is alice")
    expect(bob.locator(".msg-text", has_text=exactly("hello bob, this is alice"))).to_have_count(1)
    send(bob, "hi alice! @alice can you see this?")
    expect(alice.locator(".msg-text", has_text=exactly("hi alice! @alice can you see this?"))).to_have_count(1)

    # Own messages are told apart, in both tabs; the composer was cleared by Enter.
    expect(alice.locator(".msg-own .msg-text")).to_have_text(["hello bob, this is alice"])
    expect(bob.locator(".msg-own .msg-text")).to_have_text(["hi alice! @alice can you see this?"])
    expect(alice.locator("#message-input")).to_have_value("")
    assert texts(alice) == texts(bob) == ["hello bob, this is alice", "hi alice! @alice can you see this?"]
    # The mention reaches alice as a toast; timestamps are shown.
    expect(alice.locator("[data-sonner-toast]", has_text="bob mentioned you")).to_be_visible()
    expect(alice.locator(".msg-time").first).to_have_text(re.compile(r"\d\d:\d\d"))

    alice.screenshot(path=artifacts_dir / "two-tabs-alice.png")
    bob.screenshot(path=artifacts_dir / "two-tabs-bob.png")

    # Dark mode is one click away and keeps the chat readable.
    dark_before = bob.evaluate("document.documentElement.classList.contains('dark')")
    bob.click("#color-mode")
    bob.wait_for_function(f"document.documentElement.classList.contains('dark') === {str(not dark_before).lower()}")
    bob.screenshot(path=artifacts_dir / "two-tabs-bob-toggled-theme.png")


def test_presence_and_typing_show_in_the_other_tab(open_tab: Callable[..., Any]) -> None:
    room = fresh_room()
    alice = open_tab("alice")
    enter_room(alice, room)
    bob = open_tab("bob")
    enter_room(bob, room)
    expect(alice.locator("#member-list .member")).to_have_text(["alice", "bob"])

    bob.locator("#message-input").press_sequentially("I am typ")
    expect(alice.locator("#typing")).to_have_text("bob is typing…")
    expect(bob.locator("#typing")).to_have_text("")
    bob.press("#message-input", "Enter")
    expect(alice.locator(".msg-text", has_text=exactly("I am typ"))).to_have_count(1)
    expect(alice.locator("#typing")).to_have_text("")

    # The room list shows member counts; the other room alice is in counts as unread.
    expect(alice.locator(f".room-item[data-room='{room}'] .member-count")).to_have_text("2")
    alice.locator(".room-item[data-room='general']").click()
    send(bob, "while alice looks elsewhere")
    expect(alice.locator(f".room-item[data-room='{room}'] .unread")).to_have_text("1")
    alice.locator(f".room-item[data-room='{room}']").click()
    expect(alice.locator(f".room-item[data-room='{room}'] .unread")).to_have_count(0)

    bob.close()
    expect(alice.locator("#member-list .member")).to_have_text(["alice"])


def test_markup_renders_as_text(open_tab: Callable[..., Any]) -> None:
    room = fresh_room()
    payload = (
        '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b> &amp; {{7*7}} ' + "W" * 400
    )
    mallory = open_tab("<i>mallory</i>")
    enter_room(mallory, room)
    alice = open_tab("alice")
    enter_room(alice, room)
    send(mallory, payload)

    for page in (alice, mallory):
        expect(page.locator(".msg-text", has_text="window.__pwned=2")).to_have_count(1)
        assert texts(page) == [payload]
        assert page.locator("#messages .msg-user").all_inner_texts() == ["<i>mallory</i>"]
        assert page.locator("#messages img, #messages script, #messages b, #messages i").count() == 0
        assert page.evaluate("window.__pwned") is None
        # The long word wraps inside its bubble; nothing scrolls sideways.
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        bubble = page.locator("#messages .msg").first.bounding_box()
        pane = page.locator("#messages").bounding_box()
        assert bubble["x"] + bubble["width"] <= pane["x"] + pane["width"] + 1
    expect(alice.locator("#member-list .member", has_text="<i>mallory</i>")).to_have_count(1)


def test_history_on_join_and_load_older(open_tab: Callable[..., Any], chat_backend: ChatBackend) -> None:
    room = fresh_room()
    history = [f"old message {i:02d}" for i in range(56)]
    run_async(post_as(chat_backend.url, "dora", room, history))

    alice = open_tab("alice")
    enter_room(alice, room)
    expect(alice.locator(".msg-text")).to_have_count(50)
    assert texts(alice) == history[6:]
    alice.click("#load-older")
    expect(alice.locator(".msg-text")).to_have_count(56)
    assert texts(alice) == history
    expect(alice.locator("#load-older")).to_have_count(0)


def test_phone_width_layout(browser: Any, reflex_app: ReflexApp, artifacts_dir: Path) -> None:
    room = fresh_room()
    # A phone in India: the page must show its local time (UTC+05:30), not the server's.
    context = browser.new_context(
        base_url=reflex_app.url, viewport={"width": 390, "height": 760}, timezone_id="Asia/Kolkata"
    )
    try:
        page = context.new_page()
        page.goto("/")
        page.fill("#name-input", "phone")
        page.click("#name-submit")
        expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
        expect(page.locator("#member-list")).to_be_hidden()
        page.click("#rooms-toggle")
        expect(page.locator("#member-list .member")).to_have_text(["phone"])
        page.fill("#new-room-input", room)
        page.click("#new-room-submit")
        expect(page.locator("#member-list")).to_be_hidden()
        expect(page.locator("#room-title")).to_have_text(f"# {room}")
        send(page, "a long line from a phone " + "x" * 300)
        expect(page.locator(".msg-text", has_text="from a phone")).to_have_count(1)
        local = datetime.now(ZoneInfo("Asia/Kolkata"))
        minutes = {(local - timedelta(minutes=delta)).strftime("%H:%M") for delta in (0, 1)}
        expect(page.locator(".msg-time")).to_have_text(re.compile("|".join(minutes)))
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        expect(page.locator("#send-button")).to_be_in_viewport()
        page.screenshot(path=artifacts_dir / "phone.png")
    finally:
        context.close()


def test_backend_restart_missed_messages_appear_once(
    open_tab: Callable[..., Any], chat_backend: ChatBackend, gates: list[TcpGate]
) -> None:
    room = fresh_room()
    alice, bob = open_tab("alice"), open_tab("bob")
    enter_room(alice, room)
    enter_room(bob, room)
    send(bob, "before the restart")
    expect(alice.locator(".msg-text", has_text=exactly("before the restart"))).to_have_count(1)

    # The backend dies and comes back; the UI cannot reach it until the gates open.
    for gate in gates:
        gate.cut()
    chat_backend.kill()
    for page in (alice, bob):
        expect(page.locator("#conn-badge")).to_have_attribute("data-status", re.compile("reconnecting|offline"))
    send(alice, "typed while offline")
    expect(alice.locator(".msg.msg-own", has_text="typed while offline")).to_contain_text("sending…")
    chat_backend.start()
    missed = [f"missed message {i}" for i in range(5)]
    run_async(post_as(chat_backend.url, "carol", room, missed))
    for gate in gates:
        gate.restore()

    for page in (alice, bob):
        expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected", timeout=20_000)
        for line in [*missed, "typed while offline"]:
            expect(page.locator(".msg-text", has_text=exactly(line))).to_have_count(1)
    # Anything doubled would arrive before a message sent after the reconnect.
    send(bob, "after the restart")
    for page in (alice, bob):
        expect(page.locator(".msg-text", has_text=exactly("after the restart"))).to_have_count(1)
        shown = texts(page)
        assert len(shown) == len(set(shown)) == 8, shown
        assert [line for line in shown if line.startswith("missed")] == missed
        assert shown[0] == "before the restart" and shown[-1] == "after the restart"
    expect(alice.locator(".msg.msg-own", has_text="typed while offline")).not_to_contain_text("sending…")
    assert stored_texts(chat_backend, room).count("typed while offline") == 1


def test_fleet_failover_to_the_next_backend(
    open_tab: Callable[..., Any], gates: list[TcpGate], redis_server: Any, e2e_workdir: Path, ui_port: int
) -> None:
    """Two fleet instances over Redis; the tab's instance dies and it fails over to the next URL."""
    origins = [f"http://localhost:{ui_port}"]
    first = ChatBackend(e2e_workdir, origins, name="fleet-a", redis_url=redis_server.url)
    second = ChatBackend(e2e_workdir, origins, name="fleet-b", redis_url=redis_server.url)
    first.start()
    second.start()
    try:
        gates[0].retarget(first.port)
        gates[1].retarget(second.port)
        room = fresh_room()
        alice, bob = open_tab("alice"), open_tab("bob")
        enter_room(alice, room)
        enter_room(bob, room)
        for page in (alice, bob):
            expect(page.locator("#conn-badge")).to_have_attribute("title", gates[0].url)
        send(alice, "on the first instance")
        expect(bob.locator(".msg-text", has_text=exactly("on the first instance"))).to_have_count(1)

        # The first instance dies; while nobody can reach the second, others keep talking on it.
        gates[1].cut()
        gates[0].cut()
        first.kill()
        expect(alice.locator("#conn-badge")).not_to_have_attribute("data-status", "connected")
        send(alice, "sent during the failover")
        missed = [f"said on the second instance {i}" for i in range(3)]
        run_async(post_as(second.url, "carol", room, missed))
        gates[1].restore()

        for page in (alice, bob):
            expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected", timeout=20_000)
            expect(page.locator("#conn-badge")).to_have_attribute("title", gates[1].url)
        send(bob, "on the second instance")
        expected = ["on the first instance", *missed, "sent during the failover", "on the second instance"]
        for page in (alice, bob):
            expect(page.locator(".msg-text", has_text=exactly("on the second instance"))).to_have_count(1)
            shown = texts(page)
            assert sorted(shown) == sorted(expected), shown
            assert shown[0] == "on the first instance" and shown[-1] == "on the second instance"
    finally:
        first.stop()
        second.stop()


def test_reload_restarts_the_tab_client_without_doubling(
    open_tab: Callable[..., Any], chat_backend: ChatBackend
) -> None:
    wait_until(lambda: chat_backend.connected_sockets() == 0, 20, "earlier tests' sockets to close")
    room = fresh_room()
    alice = open_tab("alice")
    enter_room(alice, room)
    send(alice, "before the reloads")
    expect(alice.locator(".msg-text")).to_have_text(["before the reloads"])
    for _ in range(2):
        alice.reload()
        expect(alice.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    # Same tab, same user and rooms; one connection on the backend, nothing shown twice.
    expect(alice.locator("#room-title")).to_have_text(f"# {room}")
    wait_until(lambda: chat_backend.connected_sockets() == 1, 10, "one socket for the reloaded tab")
    send(alice, "after the reloads")
    expect(alice.locator(".msg-text")).to_have_text(["before the reloads", "after the reloads"])
    assert chat_backend.connected_sockets() == 1
    # The directory may be up to a second old (backend/chat.py, DIRECTORY_TTL).
    wait_until(lambda: chat_backend.room_members(room) == 1, 10, "one member of the room in the directory")


def test_twenty_tabs_leave_no_connections(context: Any, chat_backend: ChatBackend) -> None:
    wait_until(lambda: chat_backend.connected_sockets() == 0, 20, "earlier tests' sockets to close")
    tabs = [context.new_page() for _ in range(20)]
    for tab in tabs:
        tab.goto("/")
    for index, tab in enumerate(tabs):
        tab.fill("#name-input", f"user{index}")
        # Enter, not a click: a click waits for animation frames, which background tabs do not get.
        tab.press("#name-input", "Enter")
    for tab in tabs:
        expect(tab.locator("#conn-badge")).to_have_attribute("data-status", "connected", timeout=30_000)
    assert chat_backend.connected_sockets() == 20
    wait_until(lambda: chat_backend.room_members("general") == 20, 10, "20 members in general")

    for tab in tabs:
        tab.close()
    wait_until(lambda: chat_backend.connected_sockets() == 0, 20, "the backend to see every tab's socket close")
    wait_until(lambda: chat_backend.room_members("general") == 0, 10, "general to empty")


def test_the_page_keeps_no_socket_to_the_ui_server(open_tab: Callable[..., Any], reflex_app: ReflexApp) -> None:
    """The chat's one socket goes to the chat backend: the UI server does nothing per tab."""
    page = open_tab("solo")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.reload()
    expect(page.locator("#conn-badge")).to_have_attribute("data-status", "connected")
    enter_room(page, fresh_room())
    send(page, "one socket only")
    expect(page.locator(".msg-text", has_text=exactly("one socket only"))).to_have_count(1)
    page.click("#color-mode")
    page.wait_for_timeout(1500)
    assert sockets and all("/socket.io/" in url for url in sockets), sockets
    assert not any(f":{reflex_app.port}/" in url for url in sockets), sockets
    # The switch that keeps Reflex's socket closed is gone once the page is up.
    assert "backend-enabled" not in page.evaluate("document.cookie")


def test_reflex_socket_accepts_only_the_app_origin(reflex_app: ReflexApp) -> None:
    url = f"ws://localhost:{reflex_app.port}/_event/?EIO=4&transport=websocket"

    async def handshake(origin: str) -> bool:
        try:
            async with websockets.connect(url, origin=origin, open_timeout=10) as ws:
                await asyncio.wait_for(ws.recv(), 10)  # engine.io's open packet
                return True
        except websockets.exceptions.InvalidStatus:
            return False

    assert run_async(handshake(reflex_app.url)) is True
    assert run_async(handshake("http://evil.example")) is False
