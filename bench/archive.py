"""The system of record at depth: a room of N messages (default 1,000,000) in
PostgreSQL, paged back to its first message and forward from 0, plus the
archiver's write throughput. A scenario, not a test.

    python -m bench.archive                 # own PostgreSQL (durable defaults) and redis-server
    python -m bench.archive --messages 100000 --url postgres://...   # an existing database

Prints p50/p99 per page of ``Archive.latest(before_seq=...)`` over every page
back to seq 1, of ``Archive.after`` over every page from 0, of one page
900,000 messages deep (repeated), and messages/s into PostgreSQL through
``Archive.write`` (batches of 500) and through the archiver (Redis stream ->
PostgreSQL, ``run_archiver``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson

from backend.archiver import ARCHIVE_KEY, archived_key, blocking_client, run_archiver
from backend.db.archive import Archive
from backend.db.migrate import upgrade
from tests.support import PostgresServer, RedisServer


def body(room: str, seq: int) -> dict[str, Any]:
    return {
        "id": f"{seq:012d}",
        "seq": seq,
        "room": room,
        "user": {"id": f"u{seq % 50}", "name": f"user{seq % 50}"},
        "text": f"message number {seq} with a few words of chat text",
        "ts": 1_700_000_000_000 + seq,
        "client_id": f"c{seq}",
    }


async def bulk_load(archive: Archive, room: str, n: int) -> float:
    """COPY n messages straight into ``messages`` (the archive's shape), then ANALYZE."""
    started = time.perf_counter()
    async with archive.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        pg = raw.driver_connection
        chunk = 100_000
        for start in range(1, n + 1, chunk):
            records = [
                (room, s, f"u{s % 50}", f"c{s}", 1_700_000_000_000 + s, 0, orjson.dumps(body(room, s)).decode())
                for s in range(start, min(n, start + chunk - 1) + 1)
            ]
            await pg.copy_records_to_table(
                "messages", records=records, columns=["room", "seq", "user_id", "client_id", "ts", "rev", "body"]
            )
        await pg.execute(
            "INSERT INTO rooms (name, epoch, last_seq, archived_seq) VALUES ($1, 'bench', $2, $2)", room, n
        )
        await pg.execute("ANALYZE messages")
    return time.perf_counter() - started


def summary(name: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    p50 = statistics.median(ms)
    return f"{name:<44} pages={len(ms):>7}  p50={p50:7.3f} ms  p99={p99:7.3f} ms  max={ms[-1]:7.3f} ms"


async def page_back(archive: Archive, room: str, page: int) -> list[float]:
    times: list[float] = []
    before: int | None = None
    first = None
    while True:
        t = time.perf_counter()
        got, more = await archive.latest(room, page, before_seq=before)
        times.append(time.perf_counter() - t)
        first = got[0]["seq"]
        if not more:
            break
        before = first
    assert first == 1, first
    return times


async def page_forward(archive: Archive, room: str, page: int, n: int) -> list[float]:
    times: list[float] = []
    after = 0
    while True:
        t = time.perf_counter()
        got = await archive.after(room, after, page)
        times.append(time.perf_counter() - t)
        if not got:
            break
        after = got[-1]["seq"]
    assert after == n, after
    return times


async def deep_page(archive: Archive, room: str, page: int, n: int, repeat: int = 500) -> list[float]:
    before = max(2, n - 900_000)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        got, _more = await archive.latest(room, page, before_seq=before)
        times.append(time.perf_counter() - t)
        assert got[-1]["seq"] == before - 1
    return times


async def write_throughput(archive: Archive, room: str, n: int, batch: int = 500) -> float:
    events = [{"type": "message", "message": body(room, s)} for s in range(1, n + 1)]
    started = time.perf_counter()
    for i in range(0, n, batch):
        await archive.write(events[i : i + batch])
    return n / (time.perf_counter() - started)


async def archiver_throughput(archive: Archive, redis_url: str, room: str, n: int) -> float:
    """From a filled ``fc:archive`` to every event in PostgreSQL and the mark set."""
    redis = blocking_client(redis_url)
    await redis.delete(ARCHIVE_KEY)
    for i in range(1, n + 1, 5000):
        async with redis.pipeline(transaction=False) as pipe:
            for s in range(i, min(n, i + 4999) + 1):
                pipe.xadd(ARCHIVE_KEY, {"e": orjson.dumps({"type": "message", "message": body(room, s)})})
            await pipe.execute()
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(run_archiver(redis, archive, stop, consumer="bench"))
    while int(await redis.get(archived_key(room)) or 0) < n:  # noqa: ASYNC110 (the mark is in Redis)
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    await redis.aclose()
    return n / elapsed


async def run(args: argparse.Namespace) -> None:
    pg = redis = None
    url = args.url
    if url is None:
        pg = PostgresServer(durable=True)
        pg.start()
        url = pg.url
    try:
        upgrade(url)
        archive = Archive(url)
        await archive.open()
        room = f"bench-{time.time_ns()}"
        print(f"loading {args.messages:,} messages by COPY ...", flush=True)
        loaded = await bulk_load(archive, room, args.messages)
        print(f"loaded in {loaded:.1f} s ({args.messages / loaded:,.0f} rows/s)")
        n, page = args.messages, args.page
        print(summary(f"latest(before_seq) back to seq 1, page {page}", await page_back(archive, room, page)))
        print(summary(f"after() from 0 to {n:,}, page {page}", await page_forward(archive, room, page, n)))
        print(summary("latest() 900,000 deep (or at seq 1), repeated", await deep_page(archive, room, page, n)))
        rate = await write_throughput(archive, room + "-w", args.writes)
        print(f"Archive.write, batches of 500: {args.writes:,} messages at {rate:,.0f} messages/s")
        if not args.no_redis:
            redis = RedisServer()
            redis.start()
            rate = await archiver_throughput(archive, redis.url, room + "-a", args.writes)
            print(f"archiver (fc:archive -> PostgreSQL): {args.writes:,} messages at {rate:,.0f} messages/s")
        await archive.close()
    finally:
        if redis:
            redis.stop()
        if pg:
            pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=50)
    parser.add_argument("--writes", type=int, default=100_000, help="messages for the write throughput runs")
    parser.add_argument("--url", help="an existing database (default: start a private PostgreSQL)")
    parser.add_argument("--no-redis", action="store_true", help="skip the archiver run (needs redis-server)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
