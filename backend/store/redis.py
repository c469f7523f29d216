"""Fleet history: one Redis Stream per room, appended by one Lua script.

The script makes dedupe, ``seq`` assignment and the append a single atomic
step, so two instances can never hand out the same ``seq`` and a resent
``client_id`` can never be stored twice. Stream entry ids are ``<seq>-0``,
which lets ``XRANGE``/``XREVRANGE`` answer ``since`` and paging directly.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from backend.store.base import (
    AppendResult,
    Message,
    MessageStore,
    RateLimited,
    RoomInfo,
    StoreUnavailable,
)

ROOMS_KEY = "fc:rooms"
MENTIONS_KEY = "fc:mentions"
"""Stored messages that may mention someone, for ``backend.worker`` (one stream,
so the worker's consumer group never has to discover new rooms)."""

_APPEND = """
local seqkey, stream, dkey, epochkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local room, rest, ttl, maxlen, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('SET', epochkey, epoch, 'NX') then
  redis.call('SADD', KEYS[5], room)
end
local prev = redis.call('GET', dkey)
if prev then
  local found = redis.call('XRANGE', stream, prev .. '-0', prev .. '-0')
  if #found > 0 then return {0, found[1][2][2]} end
  return {0, '{"id":"' .. string.format('%012d', prev) .. '","seq":' .. prev .. ',' .. rest}
end
if ARGV[7] ~= '0' then
  -- the sender's token bucket, shared by the whole fleet: a resend above is free
  local rate, burst = tonumber(ARGV[7]), tonumber(ARGV[8])
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local b = redis.call('HMGET', KEYS[7], 't', 's')
  local tokens = math.min(burst, (tonumber(b[1]) or burst) + math.max(0, now - (tonumber(b[2]) or now)) * rate / 1000)
  if tokens < 1 then return {-1, tostring(math.ceil((1 - tokens) * 1000 / rate))} end
  redis.call('HSET', KEYS[7], 't', tokens - 1, 's', now)
  redis.call('PEXPIRE', KEYS[7], math.ceil(burst * 1000 / rate) + 1000)
end
local seq = redis.call('INCR', seqkey)
local body = '{"id":"' .. string.format('%012d', seq) .. '","seq":' .. seq .. ',' .. rest
redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'm', body)
redis.call('SET', dkey, seq, 'EX', ttl)
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 100000, '*', 'm', body)
end
if ARGV[9] ~= '' then
  -- the fleet's fan-out, in the same round trip and atomic with the append:
  -- a stored message is always announced (python-socketio's emit envelope)
  redis.call('PUBLISH', KEYS[8], ARGV[9] .. body .. ARGV[10])
end
return {1, body}
"""


MENTION_GROUP = "notifier"


async def ensure_mention_group(redis: aioredis.Redis) -> None:
    """Create the worker's consumer group if missing. Web instances call this at
    start too, so mentions made before any worker ever ran are not skipped."""
    try:
        await redis.xgroup_create(MENTIONS_KEY, MENTION_GROUP, id="$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _keys(room: str) -> tuple[str, str, str]:
    tag = "{" + room + "}"
    return f"fc:{tag}:seq", f"fc:{tag}:log", f"fc:{tag}:epoch"


def connect(url: str) -> aioredis.Redis:
    """A client that fails fast (the caller answers ``unavailable``) instead of
    hanging past the client's ack timeout while Redis is down."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        health_check_interval=10,
    )


class RedisStore(MessageStore):
    limits_users = True

    def __init__(
        self, url: str, history_limit: int, dedupe_ttl: int, user_rate: tuple[float, int] | None = None
    ) -> None:
        self._url = url
        self._user_rate = ("0", "0") if user_rate is None else (repr(float(user_rate[0])), str(user_rate[1]))
        self._history_limit = history_limit
        self._dedupe_ttl = dedupe_ttl
        self.redis: aioredis.Redis | None = None
        self._append: Any = None
        self._announce: tuple[str, str] = ("", "")

    def announce_on(self, channel: str, host_id: str) -> None:
        """Publish every new message on python-socketio's pub/sub ``channel``
        from inside the append script, as an ``emit`` of event ``message`` to the
        message's room sent by ``host_id``: one round trip per message instead of
        two, and no stored message whose publish could be dropped in between.
        The caller then delivers to its own sockets itself (pub/sub skips the
        sender's ``host_id``). ``AppendResult.announced`` says it happened."""
        self._announce = (channel, host_id)

    async def open(self) -> None:
        self.redis = connect(self._url)
        self._append = self.redis.register_script(_APPEND)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    def _r(self) -> aioredis.Redis:
        if self.redis is None:
            raise StoreUnavailable("store is closed")
        return self.redis

    async def ping(self) -> bool:
        try:
            return bool(await self._r().ping())
        except (RedisError, OSError, StoreUnavailable):
            return False

    async def append(self, room: str, user: dict[str, str], text: str, client_id: str, ts: int) -> AppendResult:
        seq_key, log_key, epoch_key = _keys(room)
        # JSON keeps (user id, client_id) unambiguous: both may contain ":"
        dedupe_key = "fc:{" + room + "}:cid:" + orjson.dumps([user["id"], client_id]).decode()
        # Everything but id/seq is encoded here; the script prefixes those two.
        rest = orjson.dumps({"room": room, "user": user, "text": text, "ts": ts, "client_id": client_id})[1:]
        channel, host_id = self._announce
        prefix = suffix = b""
        if channel:
            envelope = {"method": "emit", "event": "message", "namespace": "/", "room": room, "skip_sid": None}
            envelope |= {"callback": None, "host_id": host_id, "binary": False}
            prefix, suffix = orjson.dumps(envelope)[:-1] + b',"data":[', b"]}"
        try:
            created, body = await self._append(
                keys=[
                    seq_key,
                    log_key,
                    dedupe_key,
                    epoch_key,
                    ROOMS_KEY,
                    MENTIONS_KEY,
                    "fc:rate:" + user["id"],
                    channel or "fc:unused",
                ],
                args=[
                    room,
                    rest,
                    self._dedupe_ttl,
                    self._history_limit,
                    secrets.token_hex(8),
                    "1" if "@" in text else "0",
                    *self._user_rate,
                    prefix,
                    suffix,
                ],
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        if created == -1:
            raise RateLimited(int(body) / 1000)
        return AppendResult(orjson.loads(body), created=bool(created), announced=bool(created and channel))

    async def room_info(self, room: str, create: bool = True) -> RoomInfo | None:
        seq_key, _, epoch_key = _keys(room)
        r = self._r()
        try:
            if create:
                async with r.pipeline(transaction=True) as pipe:
                    pipe.set(epoch_key, secrets.token_hex(8), nx=True)
                    pipe.sadd(ROOMS_KEY, room)
                    pipe.get(epoch_key)
                    pipe.get(seq_key)
                    _, _, epoch, seq = await pipe.execute()
            else:
                epoch, seq = await r.mget(epoch_key, seq_key)
                if epoch is None:
                    return None
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return RoomInfo(epoch.decode(), int(seq or 0))

    async def latest(self, room: str, limit: int, before_seq: int | None = None) -> tuple[list[Message], bool]:
        if before_seq is not None and before_seq <= 0:
            return [], False  # nothing comes before seq 0, and "(0-0" is not a range Redis accepts
        _, log_key, _ = _keys(room)
        top = "+" if before_seq is None else f"({before_seq}-0"
        try:
            rows = await self._r().xrevrange(log_key, max=top, min="-", count=limit + 1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        more = len(rows) > limit
        return [orjson.loads(fields[b"m"]) for _, fields in reversed(rows[:limit])], more

    async def after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        _, log_key, _ = _keys(room)
        try:
            rows = await self._r().xrange(log_key, min=f"({after_seq}-0", max="+", count=limit)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [orjson.loads(fields[b"m"]) for _, fields in rows]

    async def last_seqs(self, rooms: list[str]) -> list[int]:
        """The newest ``seq`` of each room in one round trip (the relay's gap sweep)."""
        if not rooms:
            return []
        try:
            values = await self._r().mget([_keys(r)[0] for r in rooms])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [int(v or 0) for v in values]

    async def rooms(self) -> list[str]:
        try:
            members = await self._r().smembers(ROOMS_KEY)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return sorted(m.decode() for m in members)
