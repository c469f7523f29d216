"""What the Redis history layout costs: memory per message, Redis CPU per append,
and the time to read a page, for this checkout and for another commit, side by side.

    python -m bench.history_cost                    # this checkout against the commit before the lifecycle
    python -m bench.history_cost --against <commit> --messages 100000 --rounds 3

Each round starts a fresh redis-server (no persistence) per checkout, appends
``--messages`` messages to one room through that checkout's own ``RedisStore``
(50 concurrent senders), and reads: ``used_memory`` growth per message,
Redis's ``usec_per_call`` of the append script (``INFO commandstats``), and
the client-side time of 200 reads of the latest page of 50; and the same for
this checkout with an archive configured (``this+archive``: every append also
goes to ``fc:archive``; no archiver consumes it, so its memory counts too). The other commit
runs from a temporary ``git worktree`` with this venv. The rounds alternate,
so drift on a shared machine falls on both alike. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "0204e63"
"""The last commit with one Redis stream per room (before edits, deletes and reactions)."""

PROBE = r"""
import asyncio, inspect, json, re, sys, time
from backend.store.redis import RedisStore

async def main(url, n, archive):
    params = inspect.signature(RedisStore).parameters
    if "history_limit" in params:
        store = RedisStore(url, n + 10, 3600)
    elif archive:  # every append also feeds fc:archive; no archiver runs, so the stream stays
        from backend.db.archive import Archive
        from backend.db.migrate import upgrade
        upgrade("sqlite:///" + archive)
        store = RedisStore(url, 3600, archive=Archive("sqlite:///" + archive))
    else:
        store = RedisStore(url, 3600)
    await store.open()
    r = store.redis
    await r.config_resetstat()
    before = (await r.info("memory"))["used_memory"]
    user = {"id": "u1", "name": "bench"}
    text = "a chat message of a typical length, about sixty characters."
    for start in range(0, n, 50):
        batch = range(start, min(start + 50, n))
        await asyncio.gather(*(store.append("room", user, text, f"c{i}", 1_700_000_000_000 + i) for i in batch))
    after = (await r.info("memory"))["used_memory"]
    stats = await r.info("commandstats")
    usec = stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0)
    reads = []
    for _ in range(200):
        t = time.perf_counter()
        page, _ = await store.latest("room", 50)
        reads.append((time.perf_counter() - t) * 1e6)
    assert len(page) == 50 and page[-1]["seq"] == n
    await store.close()
    reads.sort()
    print(json.dumps({"bytes_per_message": (after - before) / n, "append_usec_in_redis": usec,
                      "page_read_us_p50": reads[100], "page_read_us_p99": reads[197]}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ""))
"""


def run_probe(checkout: Path, messages: int, archive: str = "") -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from tests.support import RedisServer

    redis = RedisServer()
    redis.start()
    try:
        redis.command("CONFIG", "SET", "appendonly", "no")
        out = subprocess.run(
            [sys.executable, "-c", PROBE, redis.url, str(messages), *([archive] if archive else [])],
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": str(checkout)},
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"the probe failed in {checkout}:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default=BASELINE, help="the commit to compare with")
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fc-bench-history-") as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(other), args.against], cwd=ROOT, check=True)
        try:
            results: dict[str, list[dict[str, float]]] = {"this": [], "this+archive": [], args.against: []}
            for _ in range(args.rounds):
                results["this"].append(run_probe(ROOT, args.messages))
                results["this+archive"].append(run_probe(ROOT, args.messages, str(Path(tmp) / "archive.db")))
                results[args.against].append(run_probe(other, args.messages))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
    medians = {
        name: {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}
        for name, runs in results.items()
    }
    base = medians[args.against]
    ratios = {
        name: {key: round(m[key] / base[key], 2) if base[key] else None for key in m}
        for name, m in medians.items()
        if name != args.against
    }
    report = {"messages": args.messages, "rounds": args.rounds, "medians": medians, "vs_" + args.against: ratios}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
