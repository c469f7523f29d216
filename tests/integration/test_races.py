"""Joins racing with each other and with disconnects leave nothing behind."""

from __future__ import annotations

import asyncio
import uuid

from tests.support import ChatClient, async_wait_for
from tests.support import scrape as gauge


async def test_concurrent_joins_respect_the_room_limit_and_leak_no_listener(backends):
    backend = backends(env={"CHAT_MAX_ROOMS_PER_CONNECTION": "5"})
    c = ChatClient(backend.url, "racer")
    await c.connect()
    dup = await asyncio.gather(*(c.call("join", {"room": "dup"}) for _ in range(10)))
    assert any(a["ok"] for a in dup)
    many = await asyncio.gather(*(c.call("join", {"room": f"r{i}"}) for i in range(20)))
    assert sum(1 for a in many if a["ok"]) == 4, "5 rooms at most, 'dup' included"
    assert {a["error"] for a in many if not a["ok"]} == {"too_many_rooms"}
    await c.close()
    await async_wait_for(lambda: gauge(backend.url, "fleetchat_local_rooms") == 0, what="every room released")
    assert gauge(backend.url, "fleetchat_connected_sockets") == 0


async def test_a_client_that_disconnects_mid_join_leaves_no_ghost_member(embedded):
    r = "ghost-" + uuid.uuid4().hex[:8]
    for i in range(30):
        c = ChatClient(embedded.url, f"ghost{i}")
        await c.connect()
        await c.sio.emit("join", {"room": r})
        await c.sio.disconnect()
    watcher = ChatClient(embedded.url, "watcher")
    await watcher.connect()
    try:

        async def members() -> list[str]:
            return [m["name"] for m in (await watcher.call("join", {"room": r}))["members"]]

        # The server has closed all 30 (only the watcher is connected) and released
        # every room they joined: a join that lost its race to the disconnect left
        # nothing, or these gauges never get there.
        await async_wait_for(
            lambda: (
                gauge(embedded.url, "fleetchat_connected_sockets") == 1
                and gauge(embedded.url, "fleetchat_local_rooms") == 0
            ),
            what="every ghost closed and its rooms released",
        )
        assert await members() == ["watcher"]
        assert gauge(embedded.url, "fleetchat_local_rooms") == 1
    finally:
        await watcher.close()
