"""The archiver: copies every event from Redis into the system of record.

Writers append each stored message and each change (``{"type": "message" |
"update", ...}``, see ``backend.db.archive``) to one stream, ``fc:archive``,
as field ``e``. The archiver reads it through the consumer group
``archiver``, writes each batch with ``Archive.write`` (idempotent, so a
batch redelivered after a crash changes nothing), acknowledges it, and
publishes how far each room is archived without a hole to
``fc:{<room>}:archived``, the mark below which Redis may trim the room.

The group starts at id 0 and the stream is trimmed only below what the group
has acknowledged: an archiver that is down costs Redis memory, never data,
and ``fleetchat_archive_lag`` says how far behind it is. A restarted archiver
first finishes its own pending entries; entries pending on a consumer that
died for good are claimed after ``CLAIM_IDLE_MS``.

Over a Redis Cluster the stream is partitioned by hash slot
(``fc:{<slot tag>}:archive``, written by the scripts in the room's or the
user's slot); the archiver finds the partitions, gives each the group, and
keeps every guarantee above per partition (README, "Redis Cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge
from redis.exceptions import ResponseError

from backend import redis_client
from backend.db.archive import Archive
from backend.redis_client import AnyRedis, RedisCluster

log = logging.getLogger("fleetchat.archiver")

ARCHIVE_KEY = "fc:archive"
ARCHIVE_GROUP = "archiver"
BATCH = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 30_000
HOUSEKEEPING_SECONDS = 1.0
"""How often the lag is measured, abandoned entries claimed and the stream trimmed."""
POLL_SECONDS = 0.1
"""Over a cluster: how long an idle archiver waits between two reads of every partition."""

Entry = tuple[bytes, dict[bytes, bytes]]

_SET_IF_GREATER = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


def archived_key(room: str) -> str:
    """The room's confirmed archived seq (same hash tag as its other keys)."""
    return "fc:{" + room + "}:archived"


def lag_gauge(registry: CollectorRegistry | None = None) -> Gauge:
    return Gauge(
        "fleetchat_archive_lag",
        "Entries of fc:archive the archiver group has not acknowledged yet (undelivered + pending)",
        registry=registry,
    )


BLOCKING = {"socket_connect_timeout": 1.0, "socket_timeout": None, "socket_keepalive": True}
"""No socket timeout, since XREADGROUP blocks (redis-py 8's default is 5 s)."""


def blocking_client(url: str, cluster: bool = False) -> AnyRedis:
    """A client for the archiver (``backend.redis_client``'s options under ``BLOCKING``)."""
    return redis_client.make_client(url, cluster, **BLOCKING)


async def connect_blocking(url: str) -> AnyRedis:
    """``blocking_client`` of the kind ``url`` turns out to be (standalone or cluster)."""
    return await redis_client.ready(redis_client.make_client(url, await redis_client.is_cluster(url), **BLOCKING))


async def ensure_archive_group(redis: AnyRedis, stream: str = ARCHIVE_KEY) -> None:
    """Create the group at id 0 if missing, so nothing appended before the
    first archiver ever started is skipped. Over a cluster each partition stream
    has its group; the archiver makes it when it finds the partition."""
    if isinstance(redis, RedisCluster) and stream == ARCHIVE_KEY:
        return
    try:
        await redis.xgroup_create(stream, ARCHIVE_GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _event(fields: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The entry's event, or None for one that can never be archived (it is
    acknowledged and logged, so it cannot block the stream)."""
    try:
        event = orjson.loads(fields[b"e"])
        if event.get("type") == "read":  # {"type": "read", "user", "room", "seq"}
            str(event["user"]), str(event["room"]), int(event["seq"])
            return event
        message = event["message"]
        int(message["seq"]), str(message["room"]), str(message["user"]["id"])
        if event.get("type") == "update":
            int(event["rev"]), int(event["ts"]), str(event["kind"])
        return event
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return None


class Archiver:
    """One consumer of the archive group. On a standalone Redis it reads ``fc:archive``
    (XREADGROUP blocks up to a second); over a cluster every partition stream
    ``fc:{<slot tag>}:archive`` (the append writes the one of the room's slot), found by
    ``Partitions`` and read in one pipelined round, without blocking, every
    ``POLL_SECONDS`` while they are idle."""

    def __init__(
        self,
        redis: AnyRedis,
        archive: Archive,
        stop: asyncio.Event,
        consumer: str,
        lag: Gauge | None = None,
        batch: int = BATCH,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        self.redis = redis
        self.archive = archive
        self.stop = stop
        self.consumer = consumer
        self.lag = lag
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        self.archived = 0
        self.cluster = isinstance(redis, RedisCluster)
        self.partitions = redis_client.Partitions("archive", ARCHIVE_KEY)
        self.streams: list[str] = []
        self._grouped: set[str] = set()
        self._publish = redis.register_script(_SET_IF_GREATER)

    async def _find_streams(self, fresh: bool = False) -> None:
        """The streams to read, each with its group (made at id 0 when first found)."""
        self.streams = await self.partitions.streams(self.redis, fresh)
        for stream in self.streams:
            if stream not in self._grouped:
                await ensure_archive_group(self.redis, stream)
                self._grouped.add(stream)

    async def run(self) -> None:
        recovering = True
        last_housekeeping = 0.0
        # the next batch is read from Redis while this one is written to the database
        ahead: asyncio.Task[list[tuple[str, Entry]]] | None = None
        try:
            while not self.stop.is_set():
                try:
                    if recovering:
                        self._grouped.clear()
                        await self._find_streams(fresh=True)
                        while entries := await self._fetch("0"):  # what this consumer read before a restart
                            await self._handle(entries)
                        await self._claim_abandoned()
                        recovering = False
                        log.info("archiver %s consuming %d stream(s)", self.consumer, len(self.streams))
                    entries = await (ahead or self._fetch(">", BLOCK_MS))
                    ahead = asyncio.create_task(self._fetch(">", BLOCK_MS)) if entries else None
                    await self._handle(entries)
                    if time.monotonic() - last_housekeeping >= HOUSEKEEPING_SECONDS:
                        if ahead is None:  # not while a read is in flight: it iterates the streams
                            await self._find_streams()
                        await self._claim_abandoned()
                        await self._housekeeping()
                        last_housekeeping = time.monotonic()
                except Exception as exc:  # Redis or the database is down: retry the same entries
                    log.warning("archiver: %s: %s; retrying", type(exc).__name__, exc)
                    recovering = True  # whatever was read stays pending and is read again with "0"
                    await self._measure_lag()
                    if ahead is not None:
                        ahead.cancel()
                        ahead = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), 1.0)
            if ahead is not None:  # stopping: finish what was already read
                await self._handle(await ahead)
                ahead = None
        finally:
            if ahead is not None:
                ahead.cancel()

    async def _fetch(self, start: str, block: int | None = None) -> list[tuple[str, Entry]]:
        if not self.cluster:
            reply = await self.redis.xreadgroup(
                ARCHIVE_GROUP, self.consumer, {ARCHIVE_KEY: start}, count=self.batch, block=block
            )
            return [(ARCHIVE_KEY, entry) for _stream, found in reply or [] for entry in found]
        streams = list(self.streams)
        if streams:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xreadgroup(ARCHIVE_GROUP, self.consumer, {stream: start}, count=self.batch)
                replies = await pipe.execute()
            entries = [(stream, e) for stream, r in zip(streams, replies, strict=True) for _s, f in r or [] for e in f]
            if entries or block is None:
                return entries
        elif block is None:
            return []
        # idle: wait a little, as a blocking read would (no XREADGROUP blocks across slots)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), POLL_SECONDS)
        return []

    async def _claim_abandoned(self) -> None:
        for stream in list(self.streams):
            start = "0-0"
            while True:
                start, entries, *_ = await self.redis.xautoclaim(
                    stream, ARCHIVE_GROUP, self.consumer, self.claim_idle_ms, start_id=start, count=self.batch
                )
                await self._handle([(stream, entry) for entry in entries])
                if not entries or start in (b"0-0", "0-0"):
                    break

    async def _handle(self, entries: list[tuple[str, Entry]]) -> None:
        """Archive, then acknowledge, then publish the rooms' archived seqs."""
        if not entries:
            return
        events = []
        done: dict[str, list[bytes]] = {}
        for stream, (entry_id, fields) in entries:
            done.setdefault(stream, []).append(entry_id)
            event = _event(fields) if fields else None  # empty: trimmed away while pending
            if event is not None:
                events.append(event)
            elif fields:
                log.error("archiver: dropping malformed entry %s: %r", entry_id, fields)
        archived = await self.archive.write(events)
        if self.cluster:  # the marks live in their rooms' slots: one script call each
            for stream, ids in done.items():
                await self.redis.xack(stream, ARCHIVE_GROUP, *ids)
            await asyncio.gather(*(self._publish(keys=[archived_key(r)], args=[s]) for r, s in archived.items()))
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(ARCHIVE_KEY, ARCHIVE_GROUP, *done[ARCHIVE_KEY])
                for room, seq in archived.items():
                    await self._publish(keys=[archived_key(room)], args=[seq], client=pipe)
                await pipe.execute()
        self.archived += len(events)

    async def _housekeeping(self) -> None:
        """Measure the lag and trim what the whole group has acknowledged."""
        total = 0
        for stream in list(self.streams):
            info = await _group_info(self.redis, stream)
            if info is None:
                continue
            lag, pending, last_delivered = info
            total += lag
            oldest = (await self.redis.xpending(stream, ARCHIVE_GROUP)).get("min") if pending else last_delivered
            if oldest and _text(oldest) != "0-0":
                await self.redis.xtrim(stream, minid=_text(oldest), approximate=False)
        if self.lag is not None:
            self.lag.set(total)

    async def _measure_lag(self) -> None:
        """While the database is down the lag still has to show on /metrics."""
        with contextlib.suppress(Exception):
            if self.lag is not None and (lag := await archive_lag(self.redis, self.partitions)) is not None:
                self.lag.set(lag)


async def _group_info(redis: AnyRedis, stream: str = ARCHIVE_KEY) -> tuple[int, int, Any] | None:
    """``(entries not acknowledged, of which pending, last delivered id)`` of the group."""
    groups = await redis.xinfo_groups(stream)
    info = next((g for g in groups if _text(g.get("name")) == ARCHIVE_GROUP), None)
    if info is None:
        return None
    pending = int(info.get("pending") or 0)
    lag = info.get("lag")
    if lag is None:  # Redis cannot tell (entries deleted): count what is left
        lag = max(0, await redis.xlen(stream) - pending)
    return int(lag) + pending, pending, info.get("last-delivered-id")


_lag_partitions = redis_client.Partitions("archive", ARCHIVE_KEY, every=30.0)


async def archive_lag(redis: AnyRedis, partitions: redis_client.Partitions | None = None) -> int | None:
    """The entries of ``fc:archive`` (over a cluster: of every archive partition) the
    archiver group has not acknowledged (undelivered + pending), or None before any
    group exists. Any process with Redis can report it, e.g. a web instance's
    ``/metrics`` while no archiver runs at all."""
    total: int | None = None
    for stream in await (partitions or _lag_partitions).streams(redis):
        try:
            info = await _group_info(redis, stream)
        except ResponseError as exc:  # no stream yet
            if "no such key" in str(exc).lower():
                continue
            raise
        if info is not None:
            total = (total or 0) + info[0]
    return total


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def run_archiver(
    redis: AnyRedis,
    archive: Archive,
    stop_event: asyncio.Event,
    *,
    consumer: str | None = None,
    lag: Gauge | None = None,
    batch: int = BATCH,
    claim_idle_ms: int = CLAIM_IDLE_MS,
) -> int:
    """Archive until ``stop_event`` is set; how many events this run archived.
    ``redis`` should come from ``blocking_client`` (XREADGROUP blocks for a second)."""
    archiver = Archiver(redis, archive, stop_event, consumer or socket.gethostname(), lag, batch, claim_idle_ms)
    await archiver.run()
    return archiver.archived
