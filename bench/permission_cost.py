"""What the private-room check costs a send, measured in-process: ``Chat.member`` (the
only check on the send path) for a socket in a public room and in a private one, and
``check_readable`` (what a join, a history read or an HTTP post asks) once the room's
kind is known. A scenario, not a test.

    python -m bench.permission_cost [--calls 200000]

The check is made at join time and undone by eviction, so a send pays a dict and a set
lookup whatever the room; this shows it per call, side by side with a bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import socketio

from backend.chat import Chat
from backend.config import Settings
from backend.metrics import Metrics
from backend.presence import MemoryPresence
from backend.store.base import RoomAccess
from backend.store.sqlite import SqliteStore


async def per_call_us(calls: int, fn) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - started) / calls * 1e6


async def measure(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "chat.db"))
        await store.open()
        chat = Chat(Settings(), store, MemoryPresence(), socketio.AsyncServer(async_mode="asgi"), Metrics())
        user = {"id": "u1", "name": "bench", "username": "bench"}
        conn = chat.open_connection("sid1", user)
        await store.room_info("public")
        await store.create_private("secret", RoomAccess(owner="u1"), ["u1"])
        conn.rooms.update({"public", "secret"})
        await chat.check_readable(user, "secret")  # the first look fills the cache, as a join does

        async def nothing() -> None:
            return None

        results = {
            "bare_await_us": await per_call_us(calls, nothing),
            "member_public_us": await per_call_us(calls, lambda: chat.member("sid1", "public")),
            "member_private_us": await per_call_us(calls, lambda: chat.member("sid1", "secret")),
            "check_readable_public_us": await per_call_us(calls, lambda: chat.check_readable(user, "public")),
        }
        await store.close()
    return {k: round(v, 3) for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.calls)), indent=2))


if __name__ == "__main__":
    main()
