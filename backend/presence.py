"""Who is in which room: in memory (embedded) or in Redis (fleet).

Members are counted per user, not per socket: a user with two tabs shows once,
``joined`` fires for their first socket in a room and ``left`` for their last.
In Redis each instance heartbeats; when one dies without saying goodbye
(SIGKILL), any survivor reaps its sockets once its heartbeat is older than the
TTL, and reports who left.
"""

from __future__ import annotations

import abc
import time
from collections import defaultdict

import orjson

from backend.redis_client import REDIS_FAILURES, AnyRedis, RedisCluster
from backend.store.base import StoreUnavailable

User = dict[str, str]


class Presence(abc.ABC):
    @abc.abstractmethod
    async def add(self, room: str, sid: str, user: User) -> bool:
        """Record ``sid`` in ``room``; True when it is the user's first socket there."""

    @abc.abstractmethod
    async def remove(self, room: str, sid: str, user: User) -> bool:
        """Forget ``sid`` in ``room``; True when the user has no socket left there."""

    @abc.abstractmethod
    async def members(self, room: str) -> list[User]:
        """Distinct users in ``room``, ordered by name."""

    @abc.abstractmethod
    async def counts(self, rooms: list[str]) -> dict[str, int]:
        """Distinct users per room."""

    async def heartbeat(self) -> bool:
        """Keep this instance's members alive (fleet only); True when this
        instance had been forgotten (reaped) and must list its members again."""
        return False

    async def reap(self) -> list[tuple[str, User]]:
        """Remove members of dead instances; the ``(room, user)`` pairs that left."""
        return []

    async def drop_instance(self) -> None:
        """Forget every socket of this instance (clean shutdown)."""


def _distinct(users: list[User]) -> list[User]:
    by_id = {u["id"]: u for u in users}
    return sorted(by_id.values(), key=lambda u: (u["name"].lower(), u["id"]))


class MemoryPresence(Presence):
    def __init__(self) -> None:
        self._rooms: dict[str, dict[str, User]] = defaultdict(dict)

    async def add(self, room: str, sid: str, user: User) -> bool:
        sockets = self._rooms[room]
        first = all(u["id"] != user["id"] for u in sockets.values())
        sockets[sid] = user
        return first

    async def remove(self, room: str, sid: str, user: User) -> bool:
        sockets = self._rooms.get(room)
        if not sockets or sockets.pop(sid, None) is None:
            return False
        if not sockets:
            del self._rooms[room]
        return all(u["id"] != user["id"] for u in sockets.values())

    async def members(self, room: str) -> list[User]:
        return _distinct(list(self._rooms.get(room, {}).values()))

    async def counts(self, rooms: list[str]) -> dict[str, int]:
        return {r: len({u["id"] for u in self._rooms.get(r, {}).values()}) for r in rooms}


class RedisPresence(Presence):
    """``fc:{room}:presence`` hash of sid -> {user, inst}; ``fc:inst:<id>`` set of
    ``room\\0sid`` this instance holds; ``fc:instances`` zset of heartbeats."""

    INSTANCES = "fc:instances"

    def __init__(self, redis: AnyRedis, instance_id: str, ttl: float) -> None:
        self._r = redis
        self._inst = instance_id
        self._ttl = ttl
        self._cluster = isinstance(redis, RedisCluster)
        """Over a cluster the room's hash and the instance's set are in two slots: no
        MULTI spans them, so they are written in the order a crash leaves harmless."""

    @staticmethod
    def _key(room: str) -> str:
        return "fc:{" + room + "}:presence"

    async def _call(self, coro):  # type: ignore[no-untyped-def]
        try:
            return await coro
        except REDIS_FAILURES as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _users(self, room: str) -> list[User]:
        raw = await self._call(self._r.hvals(self._key(room)))
        return [orjson.loads(v)["user"] for v in raw]

    async def add(self, room: str, sid: str, user: User) -> bool:
        before = await self._users(room)
        entry = orjson.dumps({"user": user, "inst": self._inst})
        if self._cluster:
            # the instance's set first: after a crash in between the reaper finds no entry
            await self._call(self._r.sadd("fc:inst:" + self._inst, room + "\0" + sid))
            await self._call(self._r.hset(self._key(room), sid, entry))
            return all(u["id"] != user["id"] for u in before)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(room), sid, entry)
            pipe.sadd("fc:inst:" + self._inst, room + "\0" + sid)
            await self._call(pipe.execute())
        return all(u["id"] != user["id"] for u in before)

    async def remove(self, room: str, sid: str, user: User) -> bool:
        if self._cluster:  # the entry first: a crash in between leaves the reaper a no-op
            removed = await self._call(self._r.hdel(self._key(room), sid))
            await self._call(self._r.srem("fc:inst:" + self._inst, room + "\0" + sid))
        else:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key(room), sid)
                pipe.srem("fc:inst:" + self._inst, room + "\0" + sid)
                removed, _ = await self._call(pipe.execute())
        if not removed:
            return False
        return all(u["id"] != user["id"] for u in await self._users(room))

    async def members(self, room: str) -> list[User]:
        return _distinct(await self._users(room))

    async def counts(self, rooms: list[str]) -> dict[str, int]:
        async with self._r.pipeline(transaction=False) as pipe:
            for room in rooms:
                pipe.hvals(self._key(room))
            values = await self._call(pipe.execute())
        return {
            room: len({orjson.loads(v)["user"]["id"] for v in raw}) for room, raw in zip(rooms, values, strict=True)
        }

    async def heartbeat(self) -> bool:
        return bool(await self._call(self._r.zadd(self.INSTANCES, {self._inst: time.time()})))

    async def reap(self) -> list[tuple[str, User]]:
        deadline = time.time() - self._ttl
        dead = await self._call(self._r.zrangebyscore(self.INSTANCES, "-inf", deadline))
        left: list[tuple[str, User]] = []
        for raw_inst in dead:
            inst = raw_inst.decode()
            if inst == self._inst:
                continue  # alive, only stale after an outage: the next heartbeat refreshes it
            # One survivor reaps a dead instance; the lock outlives the work.
            if not await self._call(self._r.set("fc:reaping:" + inst, self._inst, nx=True, ex=30)):
                continue
            entries = await self._call(self._r.smembers("fc:inst:" + inst))
            for entry in entries:
                room, sid = entry.decode().split("\0", 1)
                raw = await self._call(self._r.hget(self._key(room), sid))
                if raw is None:
                    continue
                user = orjson.loads(raw)["user"]
                await self._call(self._r.hdel(self._key(room), sid))
                if all(u["id"] != user["id"] for u in await self._users(room)):
                    left.append((room, user))
            await self._call(self._r.delete("fc:inst:" + inst))
            await self._call(self._r.zrem(self.INSTANCES, inst))
        return left

    async def drop_instance(self) -> None:
        entries = await self._call(self._r.smembers("fc:inst:" + self._inst))
        async with self._r.pipeline(transaction=False) as pipe:
            for entry in entries:
                room, sid = entry.decode().split("\0", 1)
                pipe.hdel(self._key(room), sid)
            pipe.delete("fc:inst:" + self._inst)
            pipe.zrem(self.INSTANCES, self._inst)
            await self._call(pipe.execute())
