"""What the fleet-wide message limit costs: appends through the real Redis
store with and without the per-user token bucket folded into the append
script. The figures (client-side latency per append, Redis's own time per
script call, and the commands Redis ran per append, counted from ``INFO
commandstats``) go to artifacts/security/ for the README. Asserted: the bucket
adds no round trip, it holds the rate, and a resend stays free."""

from __future__ import annotations

import re
import statistics
import time
import uuid
from collections import Counter

import pytest

from backend.store import redis as redis_store
from backend.store.base import RateLimited
from backend.store.redis import RedisStore
from tests.security.helpers import record

pytestmark = pytest.mark.fleet
APPENDS = 3000

SCRIPTED = frozenset(c.lower() for c in re.findall(r"redis\.call\('(\w+)'", redis_store._APPEND))
"""Commands the append script runs inside Redis. ``commandstats`` counts those too
(one ``EVALSHA`` shows up with every ``XADD``, ``INCR``... it ran), so they are
set apart: every other command came from the client, one request each."""
OWN = ("info", "config|")
"""The measurement's own commands."""


def command_calls(redis_server) -> Counter[str]:
    """``calls`` per command, from ``INFO commandstats``."""
    stats = redis_server.command("INFO", "commandstats").decode()
    return Counter({m[1]: int(m[2]) for m in re.finditer(r"^cmdstat_(\S+?):calls=(\d+),", stats, re.M)})


def script_usec_per_call(redis_server) -> float:
    stats = redis_server.command("INFO", "commandstats").decode()
    m = re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)", stats)
    return int(m.group(2)) / int(m.group(1)) if m else 0.0


async def time_appends(store: RedisStore, redis_server) -> dict[str, object]:
    redis_server.command("CONFIG", "RESETSTAT")
    room = "cost-" + uuid.uuid4().hex[:8]
    user = {"id": "cost:" + uuid.uuid4().hex[:8], "name": "cost"}
    await store.room_info(room)  # a room's first write begins its epoch once (a round trip of its own)
    before = command_calls(redis_server)
    latencies = []
    for i in range(APPENDS):
        started = time.perf_counter()
        result = await store.append(room, user, f"message {i}", f"c{i}", 0)
        latencies.append(time.perf_counter() - started)
        assert result.created
    after = command_calls(redis_server)
    ran = {cmd: n for cmd, n in (after - before).items() if not cmd.startswith(OWN)}
    sent = {cmd: n for cmd, n in ran.items() if cmd not in SCRIPTED}
    q = statistics.quantiles(latencies, n=100)
    return {
        "p50_us": round(q[49] * 1e6, 1),
        "p99_us": round(q[98] * 1e6, 1),
        "mean_us": round(statistics.fmean(latencies) * 1e6, 1),
        "redis_usec_per_script": round(script_usec_per_call(redis_server), 2),
        "commands_per_append": {cmd: round(n / APPENDS, 3) for cmd, n in sorted(ran.items())},
        "round_trips_per_append": round(sum(sent.values()) / APPENDS, 3),
    }


async def test_the_fleet_wide_limit_rides_in_the_append_script(redis_server):
    plain = RedisStore(redis_server.url, 3600)
    limited = RedisStore(redis_server.url, 3600, user_rate=(1e9, 10**9))
    await plain.open()
    await limited.open()
    try:
        for store in (plain, limited):  # warm up: load the script, open the connection
            await time_appends_warm(store)
        without = await time_appends(plain, redis_server)
        with_limit = await time_appends(limited, redis_server)

        tight = RedisStore(redis_server.url, 3600, user_rate=(1.0, 3))
        await tight.open()
        room, user = "cost-" + uuid.uuid4().hex[:8], {"id": "tight:" + uuid.uuid4().hex, "name": "t"}
        accepted = 0
        started = time.monotonic()
        for i in range(6):
            try:
                await tight.append(room, user, "x", f"t{i}", 0)
                accepted += 1
            except RateLimited as exc:
                assert 0 < exc.retry_after <= 1.0
        elapsed = time.monotonic() - started
        # The whole burst (3) goes through; beyond it, only what 1 token/s refilled meanwhile.
        assert 3 <= accepted <= 3 + int(elapsed * 1.0), (accepted, elapsed)
        again = await tight.append(room, user, "x", "t0", 0)  # a resend is answered from dedupe
        assert not again.created and again.message["seq"] == 1
        await tight.close()
    finally:
        await plain.close()
        await limited.close()
    record(
        "limit-cost",
        {
            "appends_each": APPENDS,
            "without_limit": without,
            "with_fleet_wide_limit": with_limit,
            "extra_round_trips": round(with_limit["round_trips_per_append"] - without["round_trips_per_append"], 3),
        },
    )
    assert without["round_trips_per_append"] == with_limit["round_trips_per_append"] == 1, (without, with_limit)


async def time_appends_warm(store: RedisStore) -> None:
    user = {"id": "warm:" + uuid.uuid4().hex, "name": "w"}
    for i in range(50):
        await store.append("cost-warm", user, "w", f"w{i}", 0)
