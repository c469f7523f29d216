"""Search at depth: N messages (default 1,000,000) over 100 rooms, in SQLite (FTS5,
the embedded store) and in PostgreSQL (tsvector + GIN, the fleet's archive), then
p50/p99 of a search for a few query shapes; and what keeping the FTS5 index costs
each append of the embedded store. A scenario, not a test.

    python -m bench.search                       # both, own PostgreSQL (durable defaults)
    python -m bench.search --messages 100000 --skip-postgres

The text is drawn from a vocabulary of 20,000 words with Zipf frequencies (s = 1.1)
like natural language: the commonest word is in three quarters of the messages, a
"rare" one in a few dozen. Every search passes every room, as ``Chat.find`` does
(what ``readable`` let through), or one room for the ``room=`` shapes; 20 hits a page.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson

from backend.db.archive import Archive
from backend.db.migrate import upgrade
from backend.store.sqlite import FTS_SHIFT, SqliteStore
from bench.archive import summary
from tests.support import PostgresServer

ROOMS = [f"room-{i:03d}" for i in range(100)]
VOCABULARY = 20_000
T0 = 1_700_000_000_000


def words() -> list[str]:
    """Pronounceable distinct words, most frequent first."""
    rng = random.Random(7)
    made: list[str] = []
    seen: set[str] = set()
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    while len(made) < VOCABULARY:
        w = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
        if w not in seen:
            seen.add(w)
            made.append(w)
    return made


def corpus(n: int, vocabulary: list[str]) -> Iterator[tuple[str, int, int, dict[str, Any]]]:
    """(room, seq, ts, body) of n messages of 4-16 Zipf-drawn words, a few per millisecond."""
    rng = random.Random(11)
    cumulative = list(itertools.accumulate(1 / (r + 1) ** 1.1 for r in range(len(vocabulary))))
    total = cumulative[-1]
    seqs = dict.fromkeys(ROOMS, 0)
    for i in range(n):
        room = ROOMS[rng.randrange(len(ROOMS))]
        seqs[room] += 1
        seq, ts = seqs[room], T0 + i // 3
        text = " ".join(
            vocabulary[bisect.bisect_left(cumulative, rng.random() * total)] for _ in range(rng.randint(4, 16))
        )
        body = {
            "id": f"{seq:012d}",
            "seq": seq,
            "room": room,
            "user": {"id": f"u{i % 500}", "name": f"user{i % 500}"},
            "text": text,
            "ts": ts,
            "client_id": f"c{i}",
        }
        yield room, seq, ts, body


def shapes(vocabulary: list[str]) -> list[tuple[str, list[str], bool]]:
    """(name, queries, one room?): a few queries of each shape, so no one query's pages stay cached."""
    common = vocabulary[:5]
    rare = vocabulary[15_000:15_020]
    mid = vocabulary[50:70]
    two = [f"{a} {b}" for a, b in zip(mid, vocabulary[200:220], strict=True)]
    return [
        ("common word", common, False),
        ("rare word", rare, False),
        ("two words", two, False),
        ("common word, room=", common, True),
        ("rare word, room=", rare, True),
        ("two words, room=", two, True),
    ]


async def measure(
    label: str, search: Callable[[str, list[str]], Awaitable[Any]], vocabulary: list[str], repeat: int
) -> None:
    rng = random.Random(3)
    for name, queries, one_room in shapes(vocabulary):
        times = []
        for i in range(repeat):
            rooms = [rng.choice(ROOMS)] if one_room else ROOMS
            started = time.perf_counter()
            await search(queries[i % len(queries)], rooms)
            times.append(time.perf_counter() - started)
        print(summary(f"{label}: {name}", times), flush=True)


def load_sqlite(path: str, n: int, vocabulary: list[str]) -> float:
    """Insert n messages in one transaction, then build the FTS5 index from them (as migration 0006 does)."""
    upgrade("sqlite:///" + path)
    started = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN")
    last: dict[str, int] = {}
    fts = []
    for index, (room, seq, ts, body) in enumerate(corpus(n, vocabulary)):
        db.execute(
            "INSERT INTO messages (room, seq, user_id, client_id, ts, rev, body) VALUES (?, ?, ?, ?, ?, 0, ?)",
            (room, seq, body["user"]["id"], body["client_id"], ts, orjson.dumps(body).decode()),
        )
        fts.append((ts * FTS_SHIFT + index % 3, body["text"], room.encode().hex(), seq))
        last[room] = seq
    db.executemany("INSERT INTO messages_fts (rowid, text, room, seq) VALUES (?, ?, ?, ?)", fts)
    db.executemany("INSERT INTO rooms (name, epoch, last_seq) VALUES (?, 'bench', ?)", last.items())
    db.execute("COMMIT")
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")
    db.close()
    return time.perf_counter() - started


async def copy_postgres(archive: Archive, n: int, vocabulary: list[str]) -> float:
    """COPY n messages into ``messages`` (the generated tsvector and the GIN index fill as they go), then ANALYZE."""
    started = time.perf_counter()
    async with archive.engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
        last: dict[str, int] = {}
        rows = corpus(n, vocabulary)
        while chunk := list(itertools.islice(rows, 100_000)):
            records = [
                (r, s, b["user"]["id"], b["client_id"], ts, 0, orjson.dumps(b).decode()) for r, s, ts, b in chunk
            ]
            await pg.copy_records_to_table(
                "messages", records=records, columns=["room", "seq", "user_id", "client_id", "ts", "rev", "body"]
            )
            last |= {r: s for r, s, _, _ in chunk}
        await pg.executemany(
            "INSERT INTO rooms (name, epoch, last_seq, archived_seq) VALUES ($1, 'bench', $2, $2)", list(last.items())
        )
        await pg.execute("VACUUM ANALYZE messages")
    return time.perf_counter() - started


async def append_cost(n: int, fts: bool, concurrent: int) -> float:
    """µs per append of a fresh embedded store, ``concurrent`` senders at a time (1: a commit each)."""
    directory = tempfile.mkdtemp(prefix="fc-bench-search-")
    store = SqliteStore(os.path.join(directory, "chat.db"))
    await store.open()
    if not fts:
        store._index = lambda *args: None  # type: ignore[method-assign]
    user = {"id": "u1", "name": "bench"}
    vocabulary = words()
    texts = [" ".join(random.Random(i).choices(vocabulary[:2000], k=10)) for i in range(1000)]
    started = time.perf_counter()
    for start in range(0, n, concurrent):
        await asyncio.gather(
            *(
                store.append(ROOMS[i % 10], user, texts[i % 1000], f"c{i}", T0 + i)
                for i in range(start, min(n, start + concurrent))
            )
        )
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed / n * 1e6


async def run(args: argparse.Namespace) -> None:
    vocabulary = words()
    print(f"corpus: {args.messages:,} messages over {len(ROOMS)} rooms", flush=True)
    if not args.skip_sqlite:
        path = os.path.join(tempfile.mkdtemp(prefix="fc-bench-search-"), "chat.db")
        print(f"SQLite: loaded and indexed in {load_sqlite(path, args.messages, vocabulary):.1f} s", flush=True)
        store = SqliteStore(path)
        await store.open()
        await measure("SQLite FTS5", lambda q, rooms: store.search(q, rooms, None, 20), vocabulary, args.repeat)
        await store.close()
    if not args.skip_postgres:
        pg = PostgresServer(durable=True)
        pg.start()
        try:
            upgrade(pg.url)
            archive = Archive(pg.url)
            await archive.open()
            print(f"PostgreSQL: COPY in {await copy_postgres(archive, args.messages, vocabulary):.1f} s", flush=True)
            await measure("PostgreSQL", lambda q, rooms: archive.search(q, rooms, None, 20), vocabulary, args.repeat)
            await archive.close()
        finally:
            pg.stop()
    for concurrent in (1, 100):
        without = await append_cost(args.appends, False, concurrent)
        with_fts = await append_cost(args.appends, True, concurrent)
        print(
            f"SQLite append, {concurrent:>3} at a time: {without:7.1f} µs without FTS5, {with_fts:7.1f} µs with"
            f" (+{with_fts - without:.1f} µs, {100 * (with_fts / without - 1):+.0f}%)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200, help="searches per query shape")
    parser.add_argument("--appends", type=int, default=20_000, help="appends per run of the append cost")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
