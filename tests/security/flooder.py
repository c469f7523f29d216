"""A flooding client, run as its own process by test_flood.py so its CPU is
not the measuring process's: ``python -m tests.security.flooder URL ROOM RATE SECONDS``.

It sends ``RATE`` messages per second without waiting for acks (one in ten
over the text limit), and meanwhile keeps reconnecting a second socket that
sends frames over the packet limit. It prints one JSON line of counts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
import time

import orjson
import socketio

from backend.config import Settings

OVERSIZED_BYTES = Settings.model_fields["max_payload_bytes"].default + 100_000
"""Over the default packet cap (a text under it would get a ``too_large`` ack instead)."""


async def flood_messages(url: str, room: str, rate: float, seconds: float, counts: collections.Counter) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    sio.on("disconnect", lambda *a: counts.update(["flood_disconnected"]))
    await sio.connect(url, auth={"name": "flooder"}, transports=["websocket"], wait_timeout=10)
    ack = await sio.call("join", {"room": room}, timeout=10)
    assert ack["ok"], ack

    def on_ack(reply: dict) -> None:
        counts.update(["acked_ok" if reply.get("ok") else "refused_" + str(reply.get("error"))])

    print("ready", flush=True)
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and sio.connected:
        owed += per_tick
        while owed >= 1:
            owed -= 1
            n += 1
            text = "x" * 4001 if n % 10 == 0 else f"flood {n}"
            await sio.emit("message", {"room": room, "text": text, "client_id": f"f{n}"}, callback=on_ack)
            counts.update(["sent"])
        await asyncio.sleep(tick)
    await asyncio.sleep(1.0)  # the last acks
    await sio.disconnect()


async def flood_oversized(url: str, room: str, seconds: float, counts: collections.Counter) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sio = socketio.AsyncClient(reconnection=False)
        try:
            await sio.connect(url, auth={"name": "flooder"}, transports=["websocket"], wait_timeout=5)
        except socketio.exceptions.ConnectionError:
            counts.update(["oversized_connect_refused"])
            await asyncio.sleep(0.2)
            continue
        await sio.emit("message", {"room": room, "text": "y" * OVERSIZED_BYTES})
        counts.update(["oversized_sent"])
        for _ in range(100):
            if not sio.connected:
                counts.update(["oversized_dropped"])
                break
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            await sio.disconnect()
        await asyncio.sleep(0.05)


async def main(url: str, room: str, rate: float, seconds: float) -> None:
    counts: collections.Counter = collections.Counter()
    await asyncio.gather(flood_messages(url, room, rate, seconds, counts), flood_oversized(url, room, seconds, counts))
    print(orjson.dumps(dict(counts)).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
