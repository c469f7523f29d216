"""The archiver end to end: a real redis-server, the tests' own PostgreSQL,
``run_archiver`` as a task. Redis database 7 keeps its keys apart from the
other tests that share the session's redis-server. Every test runs twice: on
that standalone server (one stream, ``fc:archive``) and on a 3-master Redis
Cluster (a partition stream per slot; rooms ``a`` and ``b``, ``r`` and ``d``
have their slots on different masters)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from redis.asyncio.cluster import RedisCluster as ClusterClient
from sqlalchemy import func, select

from backend.archiver import (
    ARCHIVE_GROUP,
    ARCHIVE_KEY,
    archive_lag,
    archived_key,
    blocking_client,
    ensure_archive_group,
    lag_gauge,
    run_archiver,
)
from backend.db.archive import Archive
from backend.db.migrate import upgrade
from backend.db.schema import messages, updates
from backend.redis_client import AnyRedis, Partitions, partition_key
from backend.store.redis import RedisStore
from tests.dbhelpers import changed, sent
from tests.support import ROOT, PostgresServer, RedisCluster, RedisServer, async_wait_for, free_port, http_get

DB = 7


def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{DB}"


@pytest.fixture(params=["standalone", "cluster"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def url(mode: str, request: pytest.FixtureRequest) -> str:
    """The REDIS_URL of this run: the session's server (database 7), or a cluster node."""
    if mode == "cluster":
        return request.getfixturevalue("redis_cluster").url
    return redis_url(request.getfixturevalue("redis_server"))


@pytest.fixture
async def redis(url: str, mode: str, request: pytest.FixtureRequest) -> AsyncIterator[AnyRedis]:
    client = blocking_client(url, cluster=mode == "cluster")
    cluster: RedisCluster | None = request.getfixturevalue("redis_cluster") if mode == "cluster" else None
    await (asyncio.to_thread(cluster.flush) if cluster else client.flushdb())
    yield client
    await (asyncio.to_thread(cluster.flush) if cluster else client.flushdb())
    await client.aclose()


def stream_of(redis: AnyRedis, room: str) -> str:
    """Where writers put ``room``'s events: ``fc:archive``, or its slot's partition."""
    return partition_key("archive", "fc:{" + room + "}:seq") if isinstance(redis, ClusterClient) else ARCHIVE_KEY


def room_of(event: dict) -> str:
    return event["message"]["room"] if "message" in event else event["room"]


@pytest.fixture
async def archive(postgres: PostgresServer) -> AsyncIterator[Archive]:
    url = postgres.create_database("a" + uuid.uuid4().hex[:12])
    upgrade(url)
    arch = Archive(url)
    await arch.open()
    yield arch
    await arch.close()


async def xadd(redis: AnyRedis, events: list[dict]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(stream_of(redis, room_of(event)), {"e": orjson.dumps(event)})
        await pipe.execute()


def start(redis: AnyRedis, archive: Archive, **kwargs: object) -> tuple[asyncio.Task[int], asyncio.Event]:
    stop = asyncio.Event()
    return asyncio.create_task(run_archiver(redis, archive, stop, **kwargs)), stop  # type: ignore[arg-type]


async def counts(archive: Archive) -> tuple[int, int]:
    async with archive.engine.connect() as conn:
        n_messages = (await conn.execute(select(func.count()).select_from(messages))).scalar_one()
        n_updates = (await conn.execute(select(func.count()).select_from(updates))).scalar_one()
    return n_messages, n_updates


async def archived_mark(redis: AnyRedis, room: str) -> int:
    value = await redis.get(archived_key(room))
    return int(value) if value else 0


async def wait_archived(redis: AnyRedis, archive: Archive, marks: dict[str, int]) -> None:
    """Until PostgreSQL and the Redis marks say each room is archived up to its seq."""

    async def done() -> bool:
        for room, seq in marks.items():
            state = await archive.room_state(room)
            if state is None or state[2] < seq or await archived_mark(redis, room) < seq:
                return False
        return True

    await async_wait_for(done, timeout=60, what=f"archive at {marks}")


async def pending(redis: AnyRedis) -> int:
    streams = await Partitions("archive", ARCHIVE_KEY).streams(redis)
    return sum([int((await redis.xpending(s, ARCHIVE_GROUP))["pending"]) for s in streams])


async def lag_now(redis: AnyRedis) -> int | None:
    """``archive_lag`` with a fresh look at which partitions exist."""
    return await archive_lag(redis, Partitions("archive", ARCHIVE_KEY))


async def no_pending(redis: AnyRedis) -> bool:
    return await pending(redis) == 0


async def test_events_reach_postgres_and_the_marks(redis: AnyRedis, archive: Archive) -> None:
    events = [sent("a", s) for s in range(1, 1201)] + [sent("b", s) for s in range(1, 31)]
    events += [changed("a", 7, 1, text="edited"), changed("b", 3, 1, "delete")]
    await xadd(redis, events)  # before any archiver ran: the group starts at 0
    registry = CollectorRegistry()
    lag = lag_gauge(registry)
    task, stop = start(redis, archive, lag=lag)
    try:
        await wait_archived(redis, archive, {"a": 1200, "b": 30})
        assert await counts(archive) == (1230, 2)
        page, _ = await archive.latest("a", 1, before_seq=8)
        assert page[0]["text"] == "edited"
        assert await archive.room_state("b") == (30, 1, 30)
        # the stream is trimmed of what the group acknowledged, and the lag drains
        await async_wait_for(lambda: lag._value.get() == 0, what="lag 0")
        await xadd(redis, [sent("a", 1201)])
        await wait_archived(redis, archive, {"a": 1201})
        assert b"fleetchat_archive_lag" in generate_latest(registry)

        async def trimmed() -> bool:
            return await redis.xlen(stream_of(redis, "a")) <= 1

        await async_wait_for(trimmed, what="fc:archive trimmed")
    finally:
        stop.set()
        assert await task >= 1233


async def test_marks_only_grow(redis: AnyRedis, archive: Archive) -> None:
    await redis.set(archived_key("a"), 50)  # another archiver got further already
    await xadd(redis, [sent("a", s) for s in range(1, 11)])
    task, stop = start(redis, archive)
    try:
        await wait_archived(redis, archive, {"a": 10})
        assert await archived_mark(redis, "a") == 50
    finally:
        stop.set()
        await task


async def test_cancelled_mid_stream_then_restarted(redis: AnyRedis, archive: Archive) -> None:
    total = 4000
    await xadd(redis, [sent("r", s) for s in range(1, total + 1)])
    task, _stop = start(redis, archive, consumer="one", batch=50)

    async def some_archived() -> bool:
        return (await archive.room_state("r") or (0, 0, 0))[2] >= 200

    await async_wait_for(some_archived, interval=0.002, what="a few batches archived")
    task.cancel()  # killed between (or inside) batches: some read, not acknowledged
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await archive.room_state("r"))[2] < total, "the archiver finished before it was cancelled"
    # changes keep arriving while it is down; then the same consumer comes back
    await xadd(redis, [changed("r", 10, 1, text="late edit")] + [sent("r", s) for s in range(total + 1, total + 101)])
    task, stop = start(redis, archive, consumer="one", batch=50)
    try:
        await wait_archived(redis, archive, {"r": total + 100})
        assert await counts(archive) == (total + 100, 1)
        seqs = [m["seq"] for m in await archive.after("r", 0, total + 200)]
        assert seqs == list(range(1, total + 101))
        page, _ = await archive.latest("r", 1, before_seq=11)
        assert page[0]["text"] == "late edit"
        await async_wait_for(lambda: no_pending(redis), what="nothing pending")
    finally:
        stop.set()
        await task


async def test_entries_pending_on_a_dead_consumer_are_claimed(redis: AnyRedis, archive: Archive) -> None:
    await ensure_archive_group(redis, stream_of(redis, "d"))
    await xadd(redis, [sent("d", s) for s in range(1, 301)])
    # a consumer that read the first 200 entries and died before acknowledging them
    await redis.xreadgroup(ARCHIVE_GROUP, "dead", {stream_of(redis, "d"): ">"}, count=200)
    assert await pending(redis) == 200
    task, stop = start(redis, archive, consumer="alive", claim_idle_ms=100)
    try:
        await wait_archived(redis, archive, {"d": 300})
        assert await counts(archive) == (300, 0)
        await async_wait_for(lambda: no_pending(redis), what="nothing pending")
        info = await redis.xinfo_consumers(stream_of(redis, "d"), ARCHIVE_GROUP)
        consumers = {c["name"]: c["pending"] for c in info}
        assert consumers.get("dead", 0) == 0
    finally:
        stop.set()
        await task


async def test_a_malformed_entry_is_dropped_not_blocking(redis: AnyRedis, archive: Archive) -> None:
    await redis.xadd(stream_of(redis, "m"), {"e": b"{not json"})
    await redis.xadd(stream_of(redis, "m"), {"e": orjson.dumps({"type": "message"})})
    await xadd(redis, [sent("m", 1)])
    task, stop = start(redis, archive)
    try:
        await wait_archived(redis, archive, {"m": 1})
    finally:
        stop.set()
        await task


async def test_the_worker_process_archives_with_database_url(redis: AnyRedis, url: str, archive: Archive) -> None:
    """``python -m backend.worker`` runs the archiver next to the mention notifier
    and serves the lag on ``CHAT_WORKER_METRICS_PORT``."""
    await xadd(redis, [sent("w", s) for s in range(1, 101)])
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": url,
        "DATABASE_URL": archive.url,
        "CHAT_WORKER_NAME": "worker-test",
        "CHAT_WORKER_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, env=env)  # noqa: ASYNC220
    try:
        await wait_archived(redis, archive, {"w": 100})

        def lag_drained() -> bool:
            try:
                status, text = http_get(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return False
            return status == 200 and b"\nfleetchat_archive_lag 0.0" in text

        await async_wait_for(lambda: asyncio.to_thread(lag_drained), what="lag 0 on the worker's /metrics")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_postgres_down_costs_redis_memory_only(redis: AnyRedis) -> None:
    """While PostgreSQL is down nothing is acknowledged or trimmed, the lag
    shows every event, and the archiver catches up when it is back. (A
    durable server: with synchronous_commit off, the tests' default, a crash
    loses commits the archiver had already acknowledged to Redis.)"""
    pg = PostgresServer(durable=True)
    await asyncio.to_thread(pg.start)
    upgrade(pg.url)
    archive = Archive(pg.url)
    await archive.open()
    registry = CollectorRegistry()
    lag = lag_gauge(registry)
    assert await lag_now(redis) is None  # no stream, no group yet
    task, stop = start(redis, archive, lag=lag)
    try:
        await xadd(redis, [sent("p", s) for s in range(1, 101)])
        await wait_archived(redis, archive, {"p": 100})
        await asyncio.to_thread(pg.kill)
        await xadd(redis, [sent("p", s) for s in range(101, 401)])
        await async_wait_for(lambda: lag._value.get() == 300, what="the lag to show the 300 waiting events")
        assert await lag_now(redis) == 300
        assert await redis.xlen(stream_of(redis, "p")) >= 300
        await asyncio.to_thread(pg.start)
        await wait_archived(redis, archive, {"p": 400})
        await async_wait_for(lambda: lag._value.get() == 0, what="lag 0")
        assert await counts(archive) == (400, 0)
        assert await lag_now(redis) == 0
    finally:
        stop.set()
        await task
        await archive.close()
        await asyncio.to_thread(pg.stop)


async def test_the_stores_appends_on_three_masters_reach_postgres(
    redis: AnyRedis, url: str, mode: str, archive: Archive, request: pytest.FixtureRequest
) -> None:
    """End to end from ``RedisStore.append`` (the archive entry written by the append
    script itself, in the room's slot) to PostgreSQL, for rooms whose slots live on
    three different masters (standalone: the same rooms, one stream)."""
    if mode == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        rooms = [cluster.room_on(i, "arch") for i in range(3)]
        assert len({cluster.master_of("{" + r + "}").port for r in rooms}) == 3
    else:
        rooms = ["arch-" + uuid.uuid4().hex[:8] for _ in range(3)]
    store = RedisStore(url, dedupe_ttl=3600, archive=archive)
    await store.open()
    task, stop = start(redis, archive)
    try:
        user = {"id": "anon:archer", "name": "archer"}
        for n, room in enumerate(rooms, start=1):
            for i in range(10 * n):
                await store.append(room, user, f"{room} {i}", f"c{i}", i)
        await store.mark_read(user["id"], rooms[0], 5)
        await wait_archived(redis, archive, {room: 10 * n for n, room in enumerate(rooms, start=1)})
        assert [m["text"] for m in await archive.after(rooms[2], 28, 10)] == [f"{rooms[2]} 28", f"{rooms[2]} 29"]
        await async_wait_for(lambda: no_pending(redis), what="nothing pending")
    finally:
        stop.set()
        await task
        await store.close()
