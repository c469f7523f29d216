"""Fleet history: one Redis hash per room, keyed by the gap-free ``seq``.

Because ``seq`` has no gaps and nothing is removed (a delete leaves a
tombstone), a range of history is a range of hash fields: ``HMGET`` of
``seq`` n..m answers ``latest``, ``before`` and ``since`` in one round trip,
and a message's state can change in place (edits, deletes, reactions).

Lua scripts make every write one atomic step: an append is dedupe, the
fleet-wide rate, ``seq`` assignment, the store and the publish to the fleet;
a change is the permission check, the new state, the room's next ``rev``,
the store and its publish. Two instances can never hand out the same
``seq`` or ``rev``, and a resent ``client_id`` is never applied twice.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson
from redis.backoff import ExponentialBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

from backend import lifecycle, redis_client
from backend.archiver import ARCHIVE_KEY, archived_key
from backend.db.archive import Archive
from backend.lifecycle import Change
from backend.models import ChatError
from backend.redis_client import REDIS_FAILURES, AnyRedis, RedisCluster, partition_key
from backend.store.base import (
    AppendResult,
    ChangeResult,
    Message,
    MessageStore,
    RateLimited,
    RoomAccess,
    RoomInfo,
    StoreUnavailable,
    Update,
)

log = logging.getLogger(__name__)

ROOMS_KEY = "fc:rooms"
PRIVATE_KEY = "fc:private"
"""Every private room and DM: the public directory leaves these out."""
LAYOUT_KEY = "fc:layout"
"""``2`` once every room's history moved from the first release's streams into hashes."""
MENTIONS_KEY = "fc:mentions"
"""Stored messages that may mention someone, for ``backend.worker`` (one stream,
so the worker's consumer group never has to discover new rooms)."""
CHANGE_SCAN = 20_000
"""Update revs a resuming client's ``changed_since`` looks back over at most."""

_TAKE = """
-- the sender's token bucket, shared by the whole fleet; nil, or the ms to wait
local function take(key, rate, burst)
  if rate == 0 then return nil end
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local b = redis.call('HMGET', key, 't', 's')
  local tokens = math.min(burst, (tonumber(b[1]) or burst) + math.max(0, now - (tonumber(b[2]) or now)) * rate / 1000)
  if tokens < 1 then return tostring(math.ceil((1 - tokens) * 1000 / rate)) end
  redis.call('HSET', key, 't', tokens - 1, 's', now)
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
  return nil
end
"""

_APPEND = (
    _TAKE
    + """
local seqkey, msgs, dkey, epochkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rest, ttl = ARGV[2], ARGV[3]
if redis.call('EXISTS', epochkey) == 0 then
  -- a new room, or one whose history Redis lost: the caller begins its epoch first
  return {-3, ''}
end
local prev = redis.call('GET', dkey)
if prev then
  local found = redis.call('HGET', msgs, prev)
  if found then return {0, found} end
  return {0, '{"id":"' .. string.format('%012d', prev) .. '","seq":' .. prev .. ',' .. rest}
end
if ARGV[11] ~= '' then
  local to = tonumber(ARGV[11])
  if to < 1 or to > (tonumber(redis.call('GET', seqkey)) or 0) then return {-2, 'reply_to'} end
end
local wait = take(KEYS[7], tonumber(ARGV[7]), tonumber(ARGV[8]))
if wait then return {-1, wait} end
local seq = redis.call('INCR', seqkey)
local body = '{"id":"' .. string.format('%012d', seq) .. '","seq":' .. seq .. ',' .. rest
redis.call('HSET', msgs, seq, body)
redis.call('SET', dkey, seq, 'EX', ttl)
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', 100000, '*', 'm', body)
end
if ARGV[9] ~= '' then
  -- the fleet's fan-out, in the same round trip and atomic with the append:
  -- a stored message is always announced (python-socketio's emit envelope)
  redis.call(ARGV[14] == '1' and 'SPUBLISH' or 'PUBLISH', KEYS[8], ARGV[9] .. body .. ARGV[10])
end
if ARGV[12] == '1' then
  -- for the archiver; and every 100 messages, trim what it has confirmed beyond the window
  redis.call('XADD', KEYS[9], '*', 'e', '{"type":"message","message":' .. body .. '}')
  if seq % 100 == 0 then
    local upto = math.min(tonumber(redis.call('GET', KEYS[10]) or '0'), seq - tonumber(ARGV[13]))
    local low = tonumber(redis.call('GET', KEYS[11]) or '0')
    if upto > low then
      local stop = math.min(upto, low + 5000)
      for from = low + 1, stop, 1000 do
        local fields = {}
        for s = from, math.min(stop, from + 999) do fields[#fields + 1] = s end
        redis.call('HDEL', msgs, unpack(fields))
      end
      redis.call('SET', KEYS[11], stop)
    end
  end
end
return {1, body}
"""
)

_CHANGE = (
    _TAKE
    + """
local msgs, revkey, upd, dkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local seq, kind, actor, arg = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local body = redis.call('HGET', msgs, seq)
if not body then
  -- trimmed from the window: the caller brings it back from the archive, then retries
  if ARGV[14] == '1' and tonumber(seq) <= (tonumber(redis.call('GET', KEYS[8])) or 0) then return {-4, ''} end
  return {-2, 'not_found'}
end
if redis.call('GET', dkey) == seq then return {0, body} end
local m = cjson.decode(body)
if m.deleted then
  if kind == 'delete' then return {0, body} end
  return {-2, 'deleted'}
end
local mine = m.user.id == actor
if kind == 'edit' then
  if not mine then return {-2, 'forbidden_edit'} end
  if m.text == arg then return {0, body} end
  m.text = arg
  m.edited_ts = tonumber(ARGV[7])
elseif kind == 'delete' then
  if not mine and ARGV[4] ~= '1' then return {-2, 'forbidden_delete'} end
  m.text = ''
  m.deleted = true
  m.reactions = nil
  m.edited_ts = nil
else
  local reactions = m.reactions or {}
  local users = reactions[arg] or {}
  local at = nil
  for i, u in ipairs(users) do if u == actor then at = i end end
  local on = ARGV[6] == '1'
  if on == (at ~= nil) then return {0, body} end
  if on then
    if not reactions[arg] then
      local n = 0
      for _ in pairs(reactions) do n = n + 1 end
      if n >= tonumber(ARGV[13]) then return {-2, 'too_many_reactions'} end
    end
    table.insert(users, actor)
    reactions[arg] = users
  else
    table.remove(users, at)
    if #users == 0 then reactions[arg] = nil else reactions[arg] = users end
  end
  if next(reactions) == nil then m.reactions = nil else m.reactions = reactions end
end
local wait = take(KEYS[5], tonumber(ARGV[9]), tonumber(ARGV[10]))
if wait then return {-1, wait} end
local rev = redis.call('INCR', revkey)
m.rev = rev
body = cjson.encode(m)
redis.call('HSET', msgs, seq, body)
redis.call('HSET', upd, rev, seq .. ' ' .. kind)
redis.call('SET', dkey, seq, 'EX', ARGV[8])
if ARGV[11] ~= '' then
  local event = '{"room":"' .. m.room .. '","id":"' .. m.id .. '","kind":"' .. kind .. '","rev":' .. rev
  local publish = ARGV[15] == '1' and 'SPUBLISH' or 'PUBLISH'
  redis.call(publish, KEYS[6], ARGV[11] .. event .. ',"message":' .. body .. '}' .. ARGV[12])
end
if ARGV[14] == '1' then
  local event = '{"type":"update","rev":' .. rev .. ',"kind":"' .. kind .. '","ts":' .. ARGV[7]
  redis.call('XADD', KEYS[7], '*', 'e', event .. ',"message":' .. body .. '}')
end
return {1, body, rev}
"""
)

_TAKE_ONLY = (
    _TAKE
    + """
-- cluster mode: the sender's bucket on its own slot, taken before the append or change
return take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)

_REFUND = """
-- give back the token of a send that stored nothing (a duplicate, a refusal)
local t = tonumber(redis.call('HGET', KEYS[1], 't'))
if t then redis.call('HSET', KEYS[1], 't', math.min(tonumber(ARGV[1]), t + 1)) end
return 0
"""

_RANGE = """
-- messages lo..hi of a room (hi 0: up to the newest), and the room's last seq
local last = tonumber(redis.call('GET', KEYS[2])) or 0
local lo, hi = tonumber(ARGV[1]), tonumber(ARGV[2])
if hi == 0 or hi > last then hi = last end
if ARGV[3] ~= '0' then lo = math.max(1, hi - tonumber(ARGV[3]) + 1) end
local out = {last, lo}
if lo > hi then return out end
for from = lo, hi, 1000 do  -- unpack takes a few thousand values at most
  local fields = {}
  for s = from, math.min(hi, from + 999) do fields[#fields + 1] = s end
  local bodies = redis.call('HMGET', KEYS[1], unpack(fields))
  for i = 1, #bodies do out[#out + 1] = bodies[i] or '' end
end
return out
"""

_UPDATES = """
-- updates after a rev: {rev, kind, seq, body} quads ('' for a body only the archive has).
-- ARGV[2] > 0: at most that many, oldest first. Otherwise (a resuming client) the latest change of each message
-- with seq <= ARGV[3], newest first, at most ARGV[4] of them, looking back ARGV[5] revs.
local last = tonumber(redis.call('GET', KEYS[3])) or 0
local after = tonumber(ARGV[1])
local out = {}
if tonumber(ARGV[2]) > 0 then
  local hi = math.min(last, after + tonumber(ARGV[2]))
  if hi <= after then return out end
  local revs = {}
  for r = after + 1, hi do revs[#revs + 1] = r end
  local entries = redis.call('HMGET', KEYS[2], unpack(revs))
  for i, e in ipairs(entries) do
    if e then
      local seq, kind = string.match(e, '(%d+) (%a+)')
      out[#out + 1] = revs[i]
      out[#out + 1] = kind
      out[#out + 1] = seq
      out[#out + 1] = redis.call('HGET', KEYS[1], seq) or ''
    end
  end
  return out
end
local upto, limit, lowest = tonumber(ARGV[3]), tonumber(ARGV[4]), math.max(after, last - tonumber(ARGV[5]))
local seen, n = {}, 0
out[1] = 0
for r = last, lowest + 1, -1 do
  local e = redis.call('HGET', KEYS[2], r)
  if e then
    local seq, kind = string.match(e, '(%d+) (%a+)')
    if tonumber(seq) <= upto and not seen[seq] then
      seen[seq] = true
      if n == limit then
        out[1] = -1
        return out
      end
      n = n + 1
      out[#out + 1] = r
      out[#out + 1] = kind
      out[#out + 1] = seq
      out[#out + 1] = redis.call('HGET', KEYS[1], seq) or ''
    end
  end
end
if lowest > after then out[1] = -1 end
return out
"""

_RENEW_EPOCH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
return redis.call('GET', KEYS[1])
"""

_SEED = """
-- a room Redis does not have (new, or lost with a data loss): its history so far is
-- in the archive, up to ARGV[2] (seq) and ARGV[3] (rev); continue after it, in a new epoch
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('GET', KEYS[1])} end
local function raise(key, value)
  if (tonumber(redis.call('GET', key)) or 0) < tonumber(value) then redis.call('SET', key, value) end
end
raise(KEYS[2], ARGV[2])
raise(KEYS[3], ARGV[3])
raise(KEYS[4], ARGV[2])
raise(KEYS[5], ARGV[4])
local seq, rev = redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3]) or '0'
redis.call('HSET', KEYS[6], 'seq', seq, 'rev', rev)
redis.call('SET', KEYS[1], ARGV[1])
-- ARGV[9] = '1' (cluster): the caller put the room in the directory before, in its own slot
if ARGV[9] ~= '1' then redis.call('SADD', KEYS[7], ARGV[5]) end
local event = '{"room":"' .. ARGV[5] .. '","epoch":"' .. ARGV[1] .. '","kept_seq":' .. seq
event = event .. ',"kept_rev":' .. rev .. '}'
if ARGV[6] ~= '' then
  -- announced before any message of the new epoch, on the same channel: instances reset first
  redis.call(ARGV[8] == '1' and 'SPUBLISH' or 'PUBLISH', KEYS[8], ARGV[6] .. event .. ARGV[7])
end
return {1, event}
"""

_READ = """
-- a user's read mark in a room: forward only; with ARGV[3] = '1' (a join) set only if absent.
-- With an archive, a mark Redis does not have may be in it: {-1} asks the caller to seed it first.
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
if not cur and ARGV[4] == '1' and ARGV[5] ~= '1' then return {-1, 0} end
if cur and (ARGV[3] == '1' or cur >= tonumber(ARGV[2])) then return {0, cur} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] == '1' then redis.call('XADD', KEYS[2], '*', 'e', ARGV[6]) end
return {1, tonumber(ARGV[2])}
"""

_CREATE_PRIVATE = """
-- a new private room: refused (0) if a room of that name exists, public or private.
-- With only 3 keys (cluster) the caller keeps the directory and the private set itself.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'dm', ARGV[2], 'owner', ARGV[3])
for i = 5, #ARGV do redis.call('SADD', KEYS[3], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[1])
if #KEYS > 3 then
  redis.call('SADD', KEYS[4], ARGV[4])
  redis.call('SADD', KEYS[5], ARGV[4])
end
return 1
"""

_MIGRATE = """
-- the first release kept a room in a stream (entry ids <seq>-0): copy it into the hash
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
for _, e in ipairs(entries) do
  redis.call('HSETNX', KEYS[2], string.match(e[1], '^(%d+)'), e[2][2])
end
redis.call('DEL', KEYS[1])
return #entries
"""


MENTION_GROUP = "notifier"


async def ensure_mention_group(redis: AnyRedis) -> None:
    """Create the worker's consumer group if missing. Web instances call this at
    start too, so mentions made before any worker ever ran are not skipped.
    Over a cluster the worker makes each partition's group as it finds it (at id 0)."""
    if isinstance(redis, RedisCluster):
        return
    try:
        await redis.xgroup_create(MENTIONS_KEY, MENTION_GROUP, id="$", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _keys(room: str) -> tuple[str, str, str]:
    """The room's seq counter, its messages (seq -> current state) and its epoch."""
    tag = "{" + room + "}"
    return f"fc:{tag}:seq", f"fc:{tag}:msgs", f"fc:{tag}:epoch"


def _window_keys(room: str) -> tuple[str, str, str]:
    """How far the room is archived, how far Redis trimmed it, and where its epoch began."""
    tag = "{" + room + "}"
    return archived_key(room), f"fc:{tag}:trimmed", f"fc:{tag}:start"


def _change_keys(room: str) -> tuple[str, str]:
    """The room's update rev counter and its updates (rev -> "<seq> <kind>")."""
    tag = "{" + room + "}"
    return f"fc:{tag}:rev", f"fc:{tag}:upd"


def _access_keys(room: str) -> tuple[str, str]:
    """A private room's access (``dm``, ``owner``) and its members (user ids)."""
    tag = "{" + room + "}"
    return f"fc:{tag}:access", f"fc:{tag}:members"


def _user_rooms_key(user_id: str) -> str:
    return "fc:urooms:{" + user_id + "}"


def _reads_key(user_id: str) -> str:
    """A user's read marks, room -> seq (one hash per user, all rooms)."""
    return "fc:reads:{" + user_id + "}"


def _refused(code: int, body: bytes) -> None:
    """A write script's refusal: -1 over the user's rate (body: ms to wait), -2 a reason
    of ``lifecycle.REFUSALS``."""
    if code == -1:
        raise RateLimited(int(body) / 1000)
    if code == -2:
        raise lifecycle.refusal(body.decode())


def _update_keys(room: str) -> list[str]:
    """What the updates script reads: messages, updates, the rev counter."""
    rev_key, upd_key = _change_keys(room)
    return [_keys(room)[1], upd_key, rev_key]


def _envelope(event: str, room: str, host_id: str) -> tuple[bytes, bytes]:
    """python-socketio's pub/sub emit of ``event`` to ``room``, split around its data."""
    envelope = {"method": "emit", "event": event, "namespace": "/", "room": room, "skip_sid": None}
    envelope |= {"callback": None, "host_id": host_id, "binary": False}
    return orjson.dumps(envelope)[:-1] + b',"data":[', b"]}"


FAIL_FAST = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 2.0,
    "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    "health_check_interval": 10,
}
"""Fail fast (the caller answers ``unavailable``) instead of hanging past the
client's ack timeout while Redis is down."""


async def connect(url: str) -> AnyRedis:
    """The store's client for ``url``, standalone or cluster (``backend.redis_client``),
    with at most ``POOL_SIZE`` connections when standalone."""
    if await redis_client.is_cluster(url):
        return await redis_client.connect(url, **FAIL_FAST)
    return await redis_client.connect(url, **FAIL_FAST, max_connections=redis_client.POOL_SIZE)


class RedisStore(MessageStore):
    limits_users = True

    def __init__(
        self,
        url: str,
        dedupe_ttl: int,
        user_rate: tuple[float, int] | None = None,
        archive: Archive | None = None,
        window: int = 10_000,
    ) -> None:
        self._url = url
        self.archive = archive
        """The system of record (PostgreSQL): every event goes to it through the archiver,
        and what Redis trimmed is read from it."""
        self._window = window
        self._archiving = "1" if archive is not None else "0"
        self._user_rate = ("0", "0") if user_rate is None else (repr(float(user_rate[0])), str(user_rate[1]))
        self._dedupe_ttl = dedupe_ttl
        self.redis: AnyRedis | None = None
        self._scripts: dict[str, Any] = {}
        self._announce: tuple[str, str] = ("", "")
        self._channel_of: Callable[[str], str] | None = None
        self.cluster = False
        """A Redis Cluster (found at ``open``): every script then touches one slot (README, "Redis Cluster")."""
        self.on_epoch: Callable[[dict[str, Any]], None] | None = None
        """Told when this store begins a room's new epoch (the event it announced to the fleet)."""

    def announce_on(self, channel: str | Callable[[str], str], host_id: str) -> None:
        """Publish every new message and change on python-socketio's pub/sub
        ``channel`` from inside the scripts, as an ``emit`` of event ``message``
        (or ``update``) to the room sent by ``host_id``: one round trip per write
        instead of two, and nothing stored whose publish could be dropped in
        between. The caller then delivers to its own sockets itself (pub/sub
        skips the sender's ``host_id``). ``announced`` in the result says it happened.

        ``channel`` may be a function of the room (per-room channels such as
        ``fleetchat:{<room>}``, in the room's slot); over a cluster it must be, since a
        script's keys, the channel among them, share one slot, and it is a sharded channel
        (SPUBLISH, see ``_sharded``)."""
        if callable(channel):
            self._channel_of, name = channel, "per-room"
        else:
            self._channel_of, name = None, channel
        self._announce = (name, host_id)

    @property
    def _sharded(self) -> str:
        """'1': the scripts publish with SPUBLISH. In a cluster a room's own channel is a
        sharded one (``backend.sharded_pubsub``); anywhere else, classic PUBLISH."""
        return "1" if self.cluster and self._channel_of is not None else "0"

    def _channel(self, room: str, slot_key: str) -> str:
        """The room's pub/sub channel, or "" when the script cannot announce: not told
        to, or over a cluster a channel outside the room's slot (a script's keys, the
        channel among them, share one slot). The caller then publishes itself."""
        if not self._announce[0]:
            return ""
        channel = self._channel_of(room) if self._channel_of is not None else self._announce[0]
        if self.cluster and redis_client.slot_of(channel) != redis_client.slot_of(slot_key):
            return ""
        return channel

    async def open(self) -> None:
        try:
            self.redis = await connect(self._url)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        self.cluster = isinstance(self.redis, RedisCluster)
        scripts = {
            "append": _APPEND,
            "change": _CHANGE,
            "range": _RANGE,
            "updates": _UPDATES,
            "epoch": _RENEW_EPOCH,
            "seed": _SEED,
            "read": _READ,
            "create_private": _CREATE_PRIVATE,
            "take": _TAKE_ONLY,
            "refund": _REFUND,
        }
        for name, source in scripts.items():
            self._scripts[name] = self.redis.register_script(source)
        if self.archive is not None:
            await self.archive.open()
        try:
            await self._migrate_streams()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _migrate_streams(self) -> None:
        """Move rooms written by the first release (one stream per room) into hashes, once."""
        r = self._r()
        if self.cluster:
            return  # the first release never ran on a cluster: nothing to move
        if await r.get(LAYOUT_KEY) == b"2":
            return
        migrate = r.register_script(_MIGRATE)
        for room in await r.smembers(ROOMS_KEY):
            tag = "{" + room.decode() + "}"
            await migrate(keys=[f"fc:{tag}:log", f"fc:{tag}:msgs"])
        await r.set(LAYOUT_KEY, "2")

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self.archive is not None:
            await self.archive.close()

    def _r(self) -> AnyRedis:
        if self.redis is None:
            raise StoreUnavailable("store is closed")
        return self.redis

    async def _call(self, script: str, keys: list[Any], args: list[Any]) -> Any:
        self._r()
        try:
            return await self._scripts[script](keys=keys, args=args)
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._r().ping())
        except (*REDIS_FAILURES, StoreUnavailable):
            return False

    async def append(
        self, room: str, user: dict[str, str], text: str, client_id: str, ts: int, reply_to: int | None = None
    ) -> AppendResult:
        seq_key, msgs_key, epoch_key = _keys(room)
        # JSON keeps (user id, client_id) unambiguous: both may contain ":"
        dedupe_key = "fc:{" + room + "}:cid:" + orjson.dumps([user["id"], client_id]).decode()
        # Everything but id/seq is encoded here; the script prefixes those two.
        fields: dict[str, Any] = {"room": room, "user": user, "text": text, "ts": ts, "client_id": client_id}
        if reply_to is not None:
            fields["reply_to"] = f"{reply_to:012d}"
        rest = orjson.dumps(fields)[1:]
        channel = self._channel(room, seq_key)
        prefix, suffix = _envelope("message", room, self._announce[1]) if channel else (b"", b"")
        # Over a cluster every key below shares the room's slot: the rate bucket (the
        # user's) is taken first by a script of its own, and this one is told rate 0.
        taken = await self._take(user["id"])
        keys = [
            seq_key,
            msgs_key,
            dedupe_key,
            epoch_key,
            seq_key if self.cluster else ROOMS_KEY,  # not used by the script
            self._mentions_key(room),
            seq_key if self.cluster else "fc:rate:" + user["id"],
            channel or (seq_key if self.cluster else "fc:unused"),
            self._archive_key(seq_key),
            *_window_keys(room)[:2],
        ]
        args = [
            room,
            rest,
            self._dedupe_ttl,
            "",
            "",
            "1" if "@" in text else "0",
            *(("0", "0") if self.cluster else self._user_rate),
            prefix,
            suffix,
            "" if reply_to is None else reply_to,
            self._archiving,
            self._window,
            self._sharded,
        ]
        created = None
        try:
            created, body = await self._call("append", keys, args)
            if created == -3:
                await self._seed(room)
                created, body = await self._call("append", keys, args)
        finally:
            if taken and created != 1:  # a duplicate or a refusal costs no token
                await self._refund(user["id"])
        _refused(created, body)
        if created == -3:
            raise StoreUnavailable("the room could not be seeded from the archive")
        return AppendResult(orjson.loads(body), created=bool(created), announced=bool(created and channel))

    async def change(self, change: Change) -> ChangeResult:
        room = change.room
        seq_key, msgs_key, _ = _keys(room)
        rev_key, upd_key = _change_keys(room)
        dedupe_key = "fc:{" + room + "}:chg:" + orjson.dumps([change.actor["id"], change.client_id]).decode()
        channel = self._channel(room, seq_key)
        prefix, suffix = _envelope("update", room, self._announce[1]) if channel else (b"", b"")
        keys = [
            msgs_key,
            rev_key,
            upd_key,
            dedupe_key,
            seq_key if self.cluster else "fc:rate:" + change.actor["id"],
            channel or (seq_key if self.cluster else "fc:unused"),
            self._archive_key(seq_key),
            seq_key,
        ]
        args = [
            change.seq,
            change.kind,
            change.actor["id"],
            "1" if change.moderator else "0",
            change.text if change.kind == "edit" else change.emoji,
            "1" if change.on else "0",
            change.ts,
            self._dedupe_ttl,
            *(("0", "0") if self.cluster else self._user_rate),
            prefix,
            suffix,
            lifecycle.MAX_EMOJIS,
            self._archiving,
            self._sharded,
        ]
        taken = await self._take(change.actor["id"])
        code = None
        try:
            result = await self._call("change", keys, args)
            if result[0] == -4:  # an old message only the archive holds: bring it back, then change it
                await self._hydrate(room, change.seq)
                result = await self._call("change", keys, args)
            code, body = result[0], result[1]
        finally:
            if taken and code != 1:
                await self._refund(change.actor["id"])
        _refused(code, body)
        if code == -4:
            raise lifecycle.refusal("not_found")
        message = orjson.loads(body)
        if code == 0:
            return ChangeResult(lifecycle.update_event(message, change.kind, message.get("rev", 0)), created=False)
        return ChangeResult(lifecycle.update_event(message, change.kind, result[2]), True, announced=bool(channel))

    async def search(
        self, query: str, rooms: list[str] | None, before: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        """The archive's search: Redis keeps no index (and only a window of each room).
        A message is found once the archiver has copied it (usually within a second)."""
        if self.archive is None:
            raise ChatError("unavailable", "search needs the PostgreSQL archive: set DATABASE_URL", 503)
        try:
            return await self.archive.search(query, rooms, before, limit)
        except ChatError:
            raise  # a bad cursor
        except Exception as exc:  # the database is down
            raise StoreUnavailable(f"database: {exc}") from exc

    # -- the archive beyond the window --------------------------------------------

    async def _redis(self, awaitable: Any) -> Any:
        """One Redis command; a Redis that cannot be reached is ``StoreUnavailable``."""
        try:
            return await awaitable
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _archive_read(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except Exception as exc:  # asyncpg / SQLAlchemy / OSError: the database is down
            raise StoreUnavailable(f"database: {exc}") from exc

    async def _hydrate(self, room: str, seq: int) -> None:
        """Put an archived message back into the window (to change it there)."""
        assert self.archive is not None
        found = await self._archive_read(self.archive.after(room, seq - 1, 1))
        if found and found[0]["seq"] == seq:
            await self._redis(self._r().hsetnx(_keys(room)[1], str(seq), orjson.dumps(found[0])))

    async def _seed(self, room: str) -> str:
        """Give a room Redis does not have its epoch, continuing the archive's seq and rev."""
        state = None
        if self.archive is not None:
            state = await self._archive_read(self.archive.room_state(room))
        last_seq, last_rev, archived = state or (0, 0, 0)
        seq_key, _, epoch_key = _keys(room)
        rev_key, _ = _change_keys(room)
        archived_k, trimmed_k, start_k = _window_keys(room)
        channel = self._channel(room, seq_key)
        prefix, suffix = _envelope("epoch", room, self._announce[1]) if channel else (b"", b"")
        if self.cluster:
            # fc:rooms is in a slot of its own: listed before the room exists, so a crash in
            # between leaves a name the directory shows early, never a room it misses
            await self._redis(self._r().sadd(ROOMS_KEY, room))
        created, answer = await self._call(
            "seed",
            keys=[
                epoch_key,
                seq_key,
                rev_key,
                trimmed_k,
                archived_k,
                start_k,
                seq_key if self.cluster else ROOMS_KEY,
                channel or (seq_key if self.cluster else "fc:unused"),
            ],
            args=[
                secrets.token_hex(8),
                last_seq,
                last_rev,
                archived,
                room,
                prefix,
                suffix,
                self._sharded,
                "1" if self.cluster else "0",
            ],
        )
        if not created:
            return answer.decode()
        event = orjson.loads(answer)
        if self.on_epoch is not None:  # pub/sub skips this instance: it learns here
            self.on_epoch(event)
        return event["epoch"]

    # -- private rooms ------------------------------------------------------------------

    async def access(self, room: str) -> RoomAccess | None:
        access_key, members_key = _access_keys(room)
        try:
            async with self._r().pipeline(transaction=False) as pipe:
                pipe.hgetall(access_key)
                pipe.exists(_keys(room)[2])
                found, known = await pipe.execute()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        if found:
            return RoomAccess(found.get(b"dm") == b"1", (found.get(b"owner") or b"").decode() or None)
        if known or self.archive is None:
            return None
        # Redis does not know the room (new, or lost with its data): the record decides
        record = await self._archive_read(self.archive.access_of(room))
        if record is None:
            return None
        members = await self._archive_read(self.archive.members_of(room))
        try:
            if self.cluster:  # fc:private has a slot of its own: marked private first (fail closed)
                await self._r().sadd(PRIVATE_KEY, room)
            async with self._r().pipeline(transaction=True) as pipe:
                pipe.hset(access_key, mapping={"dm": "1" if record[0] else "0", "owner": record[1] or ""})
                if not self.cluster:
                    pipe.sadd(PRIVATE_KEY, room)
                if members:
                    pipe.sadd(members_key, *members)
                await pipe.execute()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return RoomAccess(record[0], record[1])

    async def create_private(self, room: str, access: RoomAccess, members: list[str]) -> bool:
        access_key, members_key = _access_keys(room)
        keys = [_keys(room)[2], access_key, members_key, ROOMS_KEY, PRIVATE_KEY]
        was_private = False
        if self.cluster:
            # fc:rooms and fc:private are in slots of their own: the name is marked private
            # before the room exists (fail closed: a crash in between hides a name, never
            # shows a private room as public), and unmarked if the room is not created
            was_private = bool(await self._redis(self._r().sismember(PRIVATE_KEY, room)))
            await self._redis(self._r().sadd(PRIVATE_KEY, room))
            await self._redis(self._r().sadd(ROOMS_KEY, room))
            keys = keys[:3]
        created = await self._call(
            "create_private",
            keys,
            [secrets.token_hex(8), "1" if access.dm else "0", access.owner or "", room, *members],
        )
        if self.cluster and not created and not was_private:
            await self._redis(self._r().srem(PRIVATE_KEY, room))
        if not created:
            return False
        if self.archive is not None:
            try:
                recorded = await self.archive.create_private(room, access.dm, access.owner, members)
            except Exception as exc:
                recorded, error = False, exc
            else:
                error = None
            if not recorded:  # the record knows the room (Redis lost it), or is down: undo
                await self._redis(self._r().delete(_keys(room)[2], access_key, members_key))
                await self._redis(self._r().srem(PRIVATE_KEY, room))
                if error is not None:
                    raise StoreUnavailable(f"database: {error}") from error
                return False
        await self._index_members(room, members, True)
        return True

    async def set_member(self, room: str, user_id: str, member: bool) -> bool:
        changed = None
        if self.archive is not None:
            changed = await self._archive_read(self.archive.set_member(room, user_id, member))
        _, members_key = _access_keys(room)
        done = await self._redis((self._r().sadd if member else self._r().srem)(members_key, user_id))
        await self._index_members(room, [user_id], member)
        return bool(done) if changed is None else changed

    async def _index_members(self, room: str, users: list[str], member: bool) -> None:
        """Each user's set of private rooms (what a Redis-only fleet lists them from)."""
        try:
            async with self._r().pipeline(transaction=False) as pipe:
                for user in users:
                    (pipe.sadd if member else pipe.srem)(_user_rooms_key(user), room)
                await pipe.execute()
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def is_member(self, room: str, user_id: str) -> bool:
        return bool(await self._redis(self._r().sismember(_access_keys(room)[1], user_id)))

    async def members_of(self, room: str) -> list[str]:
        return sorted(m.decode() for m in await self._redis(self._r().smembers(_access_keys(room)[1])))

    async def private_rooms(self) -> set[str]:
        return {m.decode() for m in await self._redis(self._r().smembers(PRIVATE_KEY))}

    async def private_rooms_of(self, user_id: str) -> list[str]:
        if self.archive is not None:
            return await self._archive_read(self.archive.private_rooms_of(user_id))
        return sorted(m.decode() for m in await self._redis(self._r().smembers(_user_rooms_key(user_id))))

    async def mark_read(self, user_id: str, room: str, seq: int, first: bool = False) -> int:
        key = _reads_key(user_id)
        event = orjson.dumps({"type": "read", "user": user_id, "room": room, "seq": seq})
        args = [room, seq, "1" if first else "0", self._archiving, "0", event]
        stream = self._archive_key(key)  # over a cluster: the partition of the user's slot
        code, value = await self._call("read", [key, stream], args)
        if code == -1:  # Redis lost it (or never had it): the archive's mark first
            await self._seed_reads(user_id)
            args[4] = "1"
            code, value = await self._call("read", [key, stream], args)
        return int(value)

    async def reads_of(self, user_id: str) -> dict[str, int]:
        marks = await self._redis(self._r().hgetall(_reads_key(user_id)))
        if not marks and self.archive is not None:
            return await self._seed_reads(user_id)
        return {room.decode(): int(seq) for room, seq in marks.items()}

    async def _seed_reads(self, user_id: str) -> dict[str, int]:
        """Put the archive's read marks of a user back into Redis (never lowering one)."""
        marks = await self._archive_read(self.archive.reads_of(user_id)) if self.archive is not None else {}
        if marks:
            try:
                async with self._r().pipeline(transaction=True) as pipe:
                    for room, seq in marks.items():
                        pipe.hsetnx(_reads_key(user_id), room, seq)
                    await pipe.execute()
            except REDIS_FAILURES as exc:
                raise StoreUnavailable(f"redis: {exc}") from exc
        return marks

    async def epoch_start(self, room: str) -> tuple[int, int]:
        seq, rev = await self._redis(self._r().hmget(_window_keys(room)[2], "seq", "rev"))
        return int(seq or 0), int(rev or 0)

    async def room_info(self, room: str, create: bool = True) -> RoomInfo | None:
        seq_key, _, epoch_key = _keys(room)
        rev_key, _ = _change_keys(room)
        r = self._r()
        try:
            if create:
                epoch, seq, rev = await r.mget(epoch_key, seq_key, rev_key)
                if epoch is None:
                    await self._seed(room)
                    epoch, seq, rev = await r.mget(epoch_key, seq_key, rev_key)
                if epoch is None:
                    raise StoreUnavailable(f"room {room} vanished while it was seeded")
            else:
                epoch, seq, rev = await r.mget(epoch_key, seq_key, rev_key)
                if epoch is None:
                    return None
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return RoomInfo(epoch.decode(), int(seq or 0), int(rev or 0))

    async def _range(self, room: str, lo: int, hi: int, newest: int = 0) -> tuple[int, list[Message]]:
        """Messages ``lo..hi`` (``hi`` 0: to the newest; ``newest`` n: only the last n
        up to ``hi``) and the first seq of the range."""
        seq_key, msgs_key, _ = _keys(room)
        out = await self._call("range", keys=[msgs_key, seq_key], args=[lo, hi, newest])
        first, bodies = int(out[1]), out[2:]
        cold: dict[int, Message] = {}
        missing = [first + i for i, body in enumerate(bodies) if not body]
        if missing and self.archive is not None:  # beyond the window: the archive has them
            found = await self._archive_read(self.archive.after(room, missing[0] - 1, missing[-1] - missing[0] + 1))
            cold = {m["seq"]: m for m in found}
        messages = [orjson.loads(body) if body else cold.get(first + i) for i, body in enumerate(bodies)]
        return first, [m for m in messages if m is not None]

    async def latest(self, room: str, limit: int, before_seq: int | None = None) -> tuple[list[Message], bool]:
        if before_seq is not None and before_seq <= 1:
            return [], False
        first, messages = await self._range(room, 1, 0 if before_seq is None else before_seq - 1, newest=limit)
        return messages, first > 1

    async def after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        return (await self._range(room, after_seq + 1, after_seq + limit))[1]

    async def updates_after(self, room: str, after_rev: int, limit: int) -> list[Update]:
        return await self._updates(room, await self._call("updates", _update_keys(room), [after_rev, limit, 0, 0, 0]))

    async def changed_since(self, room: str, after_rev: int, upto_seq: int, limit: int) -> tuple[list[Update], bool]:
        out = await self._call(
            "updates",
            keys=_update_keys(room),
            args=[after_rev, 0, upto_seq, limit, CHANGE_SCAN],
        )
        return list(reversed(await self._updates(room, out[1:]))), out[0] == -1

    async def _updates(self, room: str, flat: list[Any]) -> list[Update]:
        """``[rev, kind, seq, body, ...]`` from the updates script as update events; a body
        trimmed from the window is read from the archive (or, without one, left out)."""
        events = []
        for i in range(0, len(flat) - 3, 4):
            rev, kind, seq, body = int(flat[i]), flat[i + 1].decode(), int(flat[i + 2]), flat[i + 3]
            if body:
                message = orjson.loads(body)
            elif self.archive is not None:
                found = await self._archive_read(self.archive.after(room, seq - 1, 1))
                message = found[0] if found and found[0]["seq"] == seq else None
            else:
                message = None
            if message is not None:
                events.append(lifecycle.update_event(message, kind, rev))
        return events

    async def last_seqs(self, rooms: list[str]) -> list[int]:
        """The newest ``seq`` of each room in one round trip (the relay's gap sweep)."""
        return await self._mget_ints([_keys(r)[0] for r in rooms])

    async def last_revs(self, rooms: list[str]) -> list[int]:
        return await self._mget_ints([_change_keys(r)[0] for r in rooms])

    async def renew_epoch(self, room: str, old: str) -> str:
        epoch = await self._call("epoch", keys=[_keys(room)[2]], args=[old, secrets.token_hex(8)])
        return epoch.decode() if epoch is not None else old

    async def epochs(self, rooms: list[str]) -> list[str | None]:
        return [None if v is None else v.decode() for v in await self._mget([_keys(r)[2] for r in rooms])]

    async def _mget_ints(self, keys: list[str]) -> list[int]:
        return [int(v or 0) for v in await self._mget(keys)]

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []
        if self.cluster:  # the rooms' keys live in many slots: one MGET per slot, in parallel
            return await self._redis(self._r().mget_nonatomic(keys))
        return await self._redis(self._r().mget(keys))

    async def rooms(self) -> list[str]:
        members = await self._redis(self._r().smembers(ROOMS_KEY))
        return sorted(m.decode() for m in members)

    # -- where the fleet-wide collections live ------------------------------------------

    def _mentions_key(self, room: str) -> str:
        """``fc:mentions``; over a cluster the mentions partition of the room's slot, so the
        append writes it atomically (``backend.worker`` reads every partition)."""
        return partition_key("mentions", _keys(room)[0]) if self.cluster else MENTIONS_KEY

    def _archive_key(self, slot_key: str) -> str:
        """``fc:archive``; over a cluster the archive partition of ``slot_key``'s slot."""
        return partition_key("archive", slot_key) if self.cluster else ARCHIVE_KEY

    async def _take(self, user_id: str) -> bool:
        """Cluster mode: the sender's fleet-wide bucket, taken on its own slot before the
        room's script (which cannot touch it). True: a token was taken (refund it if the
        script stores nothing); raises ``RateLimited`` when there is none."""
        if not self.cluster or self._user_rate[0] == "0":
            return False
        try:
            wait = await self._call("take", ["fc:rate:" + user_id], list(self._user_rate))
        except StoreUnavailable as exc:
            # The bucket's master is down: the room's may not be. Sends go on under the
            # per-connection limit alone rather than a lost master silencing every user
            # whose bucket it held, in every room.
            log.warning("fleet-wide rate of %s not checked (its master is away: %s)", user_id, exc)
            return False
        if wait is not None:
            raise RateLimited(int(wait) / 1000)
        return True

    async def _refund(self, user_id: str) -> None:
        """Best effort: a refund Redis refuses leaves the sender one token short, never more."""
        with contextlib.suppress(StoreUnavailable):
            await self._call("refund", ["fc:rate:" + user_id], [self._user_rate[1]])
