"""The asynchronous sub-backend: @mention notifications, off the request path.

``python -m backend.worker`` reads ``fc:mentions`` (every stored message that
contains '@', appended atomically with the message itself) through a Redis
consumer group, and emits a ``notification`` event to the mentioned users'
sockets on whatever instance they are, through python-socketio's write-only
Redis emitter. Consumer groups give the guarantees: a restarted worker first
finishes what it had read but not acknowledged, two workers share the load,
and each entry is acknowledged once it was notified. A worker that dies for
good leaves its pending entries to be claimed by the others after
``CLAIM_IDLE_MS``.

With ``DATABASE_URL`` set, the same process also runs the archiver
(``backend.archiver``: Redis into the system of record) as a task of its own,
and ``CHAT_WORKER_METRICS_PORT`` serves its ``/metrics`` (the archive lag).

Over a Redis Cluster ``fc:mentions`` is one stream per hash slot in use
(``fc:{<slot tag>}:mentions``, in the room's slot, so the append still writes
it atomically); the worker reads every partition it has found, each with its
own group (README, "Redis Cluster").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

import orjson
from prometheus_client import CollectorRegistry, start_http_server
from redis.exceptions import RedisError, ResponseError

from backend import logs
from backend.archiver import connect_blocking, lag_gauge, run_archiver
from backend.config import get_settings
from backend.db.archive import Archive
from backend.fanout import SHARED_CHANNEL, FleetManager
from backend.jsonio import OrjsonModule
from backend.mentions import targets
from backend.redis_client import BASE_OPTIONS, AnyRedis, Partitions, RedisCluster, plain_url
from backend.store.redis import MENTION_GROUP, MENTIONS_KEY, PRIVATE_KEY, connect, ensure_mention_group

log = logging.getLogger("fleetchat.worker")

CLAIM_IDLE_MS = 30_000
DONE_TTL = 86_400
POLL_SECONDS = 0.1
"""Over a cluster: how long an idle worker waits between two reads of every partition."""


class MentionWorker:
    def __init__(self, redis_url: str, consumer: str) -> None:
        self._url = redis_url
        self._redis: AnyRedis | None = None
        self.partitions = Partitions("mentions", MENTIONS_KEY, every=2.0)
        self.streams: list[str] = []
        self._grouped: set[str] = set()
        self.consumer = consumer
        # publishes to the mentioned users' room channels, as the instances do (python-socketio
        # reads a plain redis:// URL; in a cluster the manager finds the other nodes itself)
        self.emitter = FleetManager(
            plain_url(redis_url),
            channel=SHARED_CHANNEL,
            write_only=True,
            json=OrjsonModule,
            redis_options={"protocol": BASE_OPTIONS["protocol"]},
        )
        self.notified = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    @property
    def redis(self) -> AnyRedis:
        if self._redis is None:
            raise RuntimeError("MentionWorker.ensure_group() connects first")
        return self._redis

    async def ensure_group(self) -> None:
        """Connect (asking the node whether it is a cluster) if not yet, then make the
        group of every stream: ``fc:mentions``, or over a cluster each mentions partition
        found so far (at id 0: a partition is new when first found)."""
        if self._redis is None:
            self._redis = await connect(self._url)
        if not isinstance(self._redis, RedisCluster):
            await ensure_mention_group(self.redis)
            self.streams = [MENTIONS_KEY]
            return
        self.streams = await self.partitions.streams(self.redis)
        for stream in self.streams:
            if stream not in self._grouped:
                try:
                    await self.redis.xgroup_create(stream, MENTION_GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
                self._grouped.add(stream)

    async def handle(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """Notify once: a marker set after the emit makes a redelivered entry a no-op."""
        done_key = "fc:notified:" + entry_id.decode()
        if stream != MENTIONS_KEY:  # entry ids are per stream: the partition names the marker too
            done_key += ":" + stream
        if not await self.redis.exists(done_key):
            message = orjson.loads(fields[b"m"])
            private = bool(await self.redis.sismember(PRIVATE_KEY, message["room"]))
            for room, payload in targets(message, private):
                await self.emitter.emit("notification", payload, room=room, namespace="/")
            self.notified += 1
            await self.redis.set(done_key, 1, ex=DONE_TTL)
        await self.redis.xack(stream, MENTION_GROUP, entry_id)

    async def _batch(self, start: str, block: int | None) -> int:
        if isinstance(self.redis, RedisCluster):
            replies = []
            if self.streams:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for stream in self.streams:
                        pipe.xreadgroup(MENTION_GROUP, self.consumer, {stream: start}, count=100)
                    replies = [r for reply in await pipe.execute() for r in reply or []]
            if not any(entries for _stream, entries in replies) and block:
                # idle: no XREADGROUP blocks across slots, so wait a little and look again
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), POLL_SECONDS)
        else:
            replies = await self.redis.xreadgroup(
                MENTION_GROUP, self.consumer, {MENTIONS_KEY: start}, count=100, block=block
            )
        count = 0
        for raw_stream, entries in replies or []:
            stream = raw_stream.decode() if isinstance(raw_stream, bytes) else raw_stream
            for entry_id, fields in entries:
                if fields:  # an entry trimmed away while pending comes back empty
                    await self.handle(stream, entry_id, fields)
                else:
                    await self.redis.xack(stream, MENTION_GROUP, entry_id)
                count += 1
        return count

    async def _claim_abandoned(self) -> None:
        for stream in self.streams:
            _next, entries, *_ = await self.redis.xautoclaim(
                stream, MENTION_GROUP, self.consumer, min_idle_time=CLAIM_IDLE_MS, start_id="0-0", count=100
            )
            for entry_id, fields in entries:
                if fields:
                    await self.handle(stream, entry_id, fields)

    async def run(self) -> None:
        await self.ensure_group()
        while await self._batch("0", None):  # what this consumer read before a restart
            pass
        log.info("worker %s consuming %d stream(s)", self.consumer, len(self.streams))
        rounds = 0
        while not self._stopping.is_set():
            try:
                await self._batch(">", 1000)
                rounds += 1
                if rounds % 10 == 0:
                    await self._claim_abandoned()
                    if isinstance(self.redis, RedisCluster):
                        await self.ensure_group()  # partitions written since (rescanned every few s)
            except (RedisError, OSError) as exc:
                log.warning("worker: Redis unavailable (%s); retrying", exc)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                with contextlib.suppress(RedisError, OSError):
                    await self.ensure_group()
        if self._redis is not None:
            await self._redis.aclose()


async def archive_forever(
    redis_url: str, database_url: str, consumer: str, stop: asyncio.Event, metrics_port: int | None = None
) -> None:
    """The archiver task: its own blocking Redis client and database pool."""
    registry = CollectorRegistry()
    lag = lag_gauge(registry)
    if metrics_port:
        start_http_server(metrics_port, registry=registry)
    archive = Archive(database_url)
    await archive.open()
    redis = await connect_blocking(redis_url)
    try:
        archived = await run_archiver(redis, archive, stop, consumer=consumer, lag=lag)
        log.info("archiver %s stopped after %d events", consumer, archived)
    finally:
        await redis.aclose()
        await archive.close()


async def main() -> None:
    settings = get_settings()
    if not settings.redis_url:
        raise SystemExit(
            "backend.worker needs REDIS_URL: in embedded mode (no Redis) the web process notifies mentions itself."
        )
    consumer = os.environ.get("CHAT_WORKER_NAME") or socket.gethostname()
    worker = MentionWorker(settings.redis_url, consumer)
    stop = asyncio.Event()

    def stop_all() -> None:
        worker.stop()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_all)
    tasks = [asyncio.create_task(worker.run(), name="mentions")]
    if settings.database_url:
        archiving = archive_forever(
            settings.redis_url, settings.database_url, consumer, stop, settings.worker_metrics_port
        )
        tasks.append(asyncio.create_task(archiving, name="archiver"))
    await asyncio.gather(*tasks)
    log.info("worker %s stopped after %d notifications", consumer, worker.notified)


if __name__ == "__main__":
    logs.configure(get_settings().log_format, get_settings().log_level)
    asyncio.run(main())
