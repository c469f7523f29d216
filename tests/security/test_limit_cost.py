"""What the fleet-wide message limit costs: appends through the real Redis
store with and without the per-user token bucket folded into the append
script. Both take one round trip; the figures (client-side latency per append
and Redis's own time per script call) go to artifacts/security/ for the
README. Asserted: the bucket holds the rate, and a resend stays free."""

from __future__ import annotations

import re
import statistics
import time
import uuid

import pytest

from backend.store.base import RateLimited
from backend.store.redis import RedisStore
from tests.security.helpers import record

pytestmark = pytest.mark.fleet
APPENDS = 3000


def script_usec_per_call(redis_server) -> float:
    stats = redis_server.command("INFO", "commandstats").decode()
    m = re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)", stats)
    return int(m.group(2)) / int(m.group(1)) if m else 0.0


async def time_appends(store: RedisStore, redis_server) -> dict[str, float]:
    redis_server.command("CONFIG", "RESETSTAT")
    room = "cost-" + uuid.uuid4().hex[:8]
    user = {"id": "cost:" + uuid.uuid4().hex[:8], "name": "cost"}
    latencies = []
    for i in range(APPENDS):
        started = time.perf_counter()
        result = await store.append(room, user, f"message {i}", f"c{i}", 0)
        latencies.append(time.perf_counter() - started)
        assert result.created
    q = statistics.quantiles(latencies, n=100)
    return {
        "p50_us": round(q[49] * 1e6, 1),
        "p99_us": round(q[98] * 1e6, 1),
        "mean_us": round(statistics.fmean(latencies) * 1e6, 1),
        "redis_usec_per_script": round(script_usec_per_call(redis_server), 2),
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
        for i in range(6):
            try:
                await tight.append(room, user, "x", f"t{i}", 0)
                accepted += 1
            except RateLimited as exc:
                assert 0 < exc.retry_after <= 1.0
        assert accepted <= 3 + 1  # burst, plus what one second's refill could add
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
            "extra_round_trips": 0,
        },
    )


async def time_appends_warm(store: RedisStore) -> None:
    user = {"id": "warm:" + uuid.uuid4().hex, "name": "w"}
    for i in range(50):
        await store.append("cost-warm", user, "w", f"w{i}", 0)
