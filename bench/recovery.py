"""How long a fleet takes to recover from a Redis restart.

    .venv/bin/python -m bench.recovery [--rounds 3] [--down 1.0]

Starts a redis-server with AOF (appendfsync always), two fleetchat instances
and two clients, one per instance, in one room. Each round kills Redis,
keeps it down for ``--down`` seconds, starts it again, and measures from the
restart until (a) both instances' ``/readyz`` say 200, (b) a send is
acknowledged again, and (c) a message sent on instance A is delivered on
instance B (the pub/sub listener has resubscribed). Prints the medians.
Uses the same real processes as the test suite (tests/support.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from tests.support import Backend, ChatClient, RedisServer, http_get


async def _until(predicate, timeout: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await predicate():
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise TimeoutError("no recovery within the bound")


async def measure(rounds: int, down: float) -> dict[str, list[float]]:
    redis = RedisServer()
    redis.start()
    env = {"REDIS_URL": redis.url, "CHAT_RATE": "1000", "CHAT_RATE_BURST": "1000"}
    a, b = Backend(env=env).start(), Backend(env=env).start()
    room = "recovery-" + uuid.uuid4().hex[:8]
    sender, reader = ChatClient(a.url, "sender"), ChatClient(b.url, "reader")
    results: dict[str, list[float]] = {"readyz": [], "first_ack": [], "cross_instance": []}
    try:
        await sender.connect()
        await reader.connect()
        await sender.join(room)
        await reader.join(room)
        for n in range(rounds):
            redis.kill()
            await asyncio.sleep(down)
            redis.start()
            restarted = time.monotonic()

            async def ready() -> bool:
                codes = await asyncio.gather(*(asyncio.to_thread(http_get, s.url + "/readyz") for s in (a, b)))
                return all(code == 200 for code, _ in codes)

            results["readyz"].append(await _until(ready) - restarted)

            async def acked(n: int = n) -> bool:
                ack = await sender.send(room, f"probe {n}", client_id=f"probe-{n}")
                return bool(ack.get("ok"))

            results["first_ack"].append(await _until(acked) - restarted)

            marker = f"marker {n} {uuid.uuid4().hex[:6]}"

            async def delivered(marker: str = marker) -> bool:
                if marker not in reader.texts(room):
                    await sender.send(room, marker, client_id="m-" + marker.replace(" ", "-"))
                    await asyncio.sleep(0.05)
                return marker in reader.texts(room)

            results["cross_instance"].append(await _until(delivered) - restarted)
    finally:
        await sender.close()
        await reader.close()
        a.kill()
        b.kill()
        redis.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--down", type=float, default=1.0, help="seconds Redis stays down")
    args = parser.parse_args()
    results = asyncio.run(measure(args.rounds, args.down))
    print(f"Redis down {args.down:.1f} s, {args.rounds} rounds; seconds from Redis restart until (median, max):")
    for key, values in results.items():
        print(f"  {key:15s} {statistics.median(values):6.2f}  {max(values):6.2f}")


if __name__ == "__main__":
    main()
