"""Reads and writes of the system of record, over an SQLAlchemy async engine
(asyncpg for PostgreSQL, aiosqlite for the embedded file and unit tests).

``write`` is what the archiver calls with a batch of events read from Redis.
It is idempotent, so a batch redelivered after a crash, or events arriving
out of order, leave the same rows: a message row is replaced only by a state
with a higher ``rev``, an update is recorded once per ``(room, rev)``.
``rooms.archived_seq`` is how far a room is archived without a hole; Redis
may trim a room's window only below it.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import ARRAY, Text, bindparam, case, func, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from backend import search
from backend.db.schema import messages, reads, room_access, room_members, rooms, updates
from backend.db.urls import driver_url, is_sqlite
from backend.models import ChatError

Message = dict[str, Any]

DEFAULT_EPOCH = "db"
"""The epoch of a room row that ``write`` creates from events that carry no
``epoch`` key; an event that carries one sets it."""

GAP_WINDOW = 10_000
"""How many seqs past ``archived_seq`` one pass of the hole check looks at."""

_ADVANCE = text(
    """
    SELECT r.name, r.archived_seq, (
        SELECT MAX(t.seq) FROM (
            SELECT m.seq AS seq, m.seq - ROW_NUMBER() OVER (ORDER BY m.seq) AS g
            FROM messages m
            WHERE m.room = r.name AND m.seq > r.archived_seq AND m.seq <= r.archived_seq + :window
        ) t WHERE t.g = r.archived_seq
    )
    FROM rooms r WHERE r.name IN :rooms
    """
).bindparams(bindparam("rooms", expanding=True))
"""Per room, the end of the run of consecutive seqs that starts right after
``archived_seq`` (``seq - row_number`` is constant along such a run), or NULL.
A correlated subquery, so each room's range is an index range scan: a join
made PostgreSQL read the whole room."""


class Archive:
    """The system of record. ``open`` before use; every method may raise
    SQLAlchemy's ``DBAPIError`` / ``OSError`` while the database is down."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = driver_url(url)
        self.engine_kwargs = engine_kwargs
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("Archive.open() first")
        return self._engine

    async def open(self) -> None:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if is_sqlite(self.url):
            kwargs["connect_args"] = {"timeout": 30}  # writers wait for each other's lock
        self._engine = create_async_engine(self.url, **(kwargs | self.engine_kwargs))
        self._sqlite = self._engine.dialect.name == "sqlite"
        self._insert = sqlite.insert if self._sqlite else postgresql.insert
        self._greatest = func.max if self._sqlite else func.greatest

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    # --- writes ---------------------------------------------------------------

    async def write(self, events: list[dict[str, Any]]) -> dict[str, int]:
        """Store a batch in one transaction; ``{room: archived_seq}`` of the rooms it touched."""
        batch = _Batch(events)
        if not batch.rooms and not batch.reads:
            return {}
        try:
            async with self.engine.begin() as conn:
                return await self._write(conn, batch, resolve_dedupe=False)
        except IntegrityError:
            # A (user, client_id) stored under another seq: only after Redis lost
            # its dedupe keys. Rare, so checked only when the fast path failed.
            async with self.engine.begin() as conn:
                return await self._write(conn, batch, resolve_dedupe=True)

    async def _write(self, conn: AsyncConnection, batch: _Batch, resolve_dedupe: bool) -> dict[str, int]:
        if batch.reads:  # read marks only move forward, whatever order they arrive in
            ins = self._insert(reads)
            await conn.execute(
                ins.on_conflict_do_update(
                    index_elements=[reads.c.user_id, reads.c.room],
                    set_={"seq": self._greatest(reads.c.seq, ins.excluded.seq)},
                ),
                list(batch.reads.values()),
            )
        if not batch.rooms:
            return {}
        # The room rows first, in name order: their row locks serialise writers
        # of one room, so each sees the other's messages when it walks archived_seq.
        ins = self._insert(rooms)
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[rooms.c.name],
                set_={
                    "last_seq": self._greatest(rooms.c.last_seq, ins.excluded.last_seq),
                    "last_rev": self._greatest(rooms.c.last_rev, ins.excluded.last_rev),
                    "epoch": case((ins.excluded.epoch == DEFAULT_EPOCH, rooms.c.epoch), else_=ins.excluded.epoch),
                },
            ),
            [batch.rooms[name] for name in sorted(batch.rooms)],
        )
        rows = list(batch.messages.values())
        if resolve_dedupe:
            rows = await _resolve_dedupe(conn, rows)
        ins = self._insert(messages)
        await conn.execute(
            ins.on_conflict_do_update(
                index_elements=[messages.c.room, messages.c.seq],
                set_={"rev": ins.excluded.rev, "body": ins.excluded.body},
                where=messages.c.rev < ins.excluded.rev,
            ),
            rows,
        )
        if batch.updates:
            ins = self._insert(updates)
            await conn.execute(
                ins.on_conflict_do_nothing(index_elements=[updates.c.room, updates.c.rev]),
                list(batch.updates.values()),
            )
        return await self._advance(conn, sorted(batch.rooms))

    async def _advance(self, conn: AsyncConnection, names: list[str]) -> dict[str, int]:
        """Move each room's ``archived_seq`` over the seqs now present without a hole."""
        pending = names
        while pending:
            result = await conn.execute(_ADVANCE, {"rooms": pending, "window": GAP_WINDOW})
            found = [(room, int(old), int(seq)) for room, old, seq in result if seq is not None and seq > old]
            if found:
                await conn.execute(
                    update(rooms)
                    .where(rooms.c.name == bindparam("r"), rooms.c.archived_seq < bindparam("s"))
                    .values(archived_seq=bindparam("s")),
                    [{"r": room, "s": seq} for room, _old, seq in found],
                )
            # a run that filled the whole window may go on past it
            pending = [room for room, old, seq in found if seq - old >= GAP_WINDOW]
        return await self._archived(conn, names)

    async def _archived(self, conn: AsyncConnection, names: list[str]) -> dict[str, int]:
        result = await conn.execute(select(rooms.c.name, rooms.c.archived_seq).where(rooms.c.name.in_(names)))
        return {name: int(seq) for name, seq in result}

    # --- reads ----------------------------------------------------------------

    async def latest(self, room: str, limit: int, before_seq: int | None = None) -> tuple[list[Message], bool]:
        """The newest ``limit`` messages (before ``before_seq``), oldest first, and whether older ones exist."""
        query = select(messages.c.body).where(messages.c.room == room)
        if before_seq is not None:
            query = query.where(messages.c.seq < before_seq)
        async with self.engine.connect() as conn:
            bodies = (await conn.execute(query.order_by(messages.c.seq.desc()).limit(limit + 1))).scalars().all()
        more = len(bodies) > limit
        return [orjson.loads(b) for b in reversed(bodies[:limit])], more

    async def after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        """Up to ``limit`` messages with seq > ``after_seq``, oldest first."""
        query = (
            select(messages.c.body)
            .where(messages.c.room == room, messages.c.seq > after_seq)
            .order_by(messages.c.seq)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [orjson.loads(b) for b in (await conn.execute(query)).scalars()]

    async def updates_after(self, room: str, after_rev: int, upto_seq: int, limit: int) -> list[Message]:
        """The current state of each message up to ``upto_seq`` changed after
        ``after_rev``: once per message, in the order of its latest change."""
        changed = (
            select(updates.c.seq, func.max(updates.c.rev).label("last"))
            .where(updates.c.room == room, updates.c.rev > after_rev, updates.c.seq <= upto_seq)
            .group_by(updates.c.seq)
            .subquery()
        )
        query = (
            select(messages.c.body)
            .join(changed, (messages.c.room == room) & (messages.c.seq == changed.c.seq))
            .order_by(changed.c.last)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [orjson.loads(b) for b in (await conn.execute(query)).scalars()]

    async def room_state(self, room: str) -> tuple[int, int, int] | None:
        """``(last_seq, last_rev, archived_seq)``, or None for a room never archived."""
        query = select(rooms.c.last_seq, rooms.c.last_rev, rooms.c.archived_seq).where(rooms.c.name == room)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    # --- private rooms: written through (rare), the record Redis is seeded from --------

    async def create_private(self, room: str, dm: bool, owner: str | None, members: list[str]) -> bool:
        """Record a new private room; False when the database knows a room of that name."""
        async with self.engine.begin() as conn:
            known = await conn.execute(select(rooms.c.name).where(rooms.c.name == room))
            if known.first() is not None:
                return False
            inserted = await conn.execute(
                self._insert(room_access)
                .values(room=room, dm=dm, owner=owner)
                .on_conflict_do_nothing(index_elements=[room_access.c.room])
            )
            if inserted.rowcount == 0:
                return False
            if members:
                await conn.execute(
                    self._insert(room_members).on_conflict_do_nothing(),
                    [{"room": room, "user_id": user} for user in members],
                )
        return True

    async def set_member(self, room: str, user_id: str, member: bool) -> bool:
        async with self.engine.begin() as conn:
            if member:
                done = await conn.execute(
                    self._insert(room_members).values(room=room, user_id=user_id).on_conflict_do_nothing()
                )
            else:
                done = await conn.execute(
                    room_members.delete().where(room_members.c.room == room, room_members.c.user_id == user_id)
                )
            return done.rowcount > 0

    async def access_of(self, room: str) -> tuple[bool, str | None] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(room_access.c.dm, room_access.c.owner).where(room_access.c.room == room))
            ).first()
        return None if row is None else (bool(row[0]), row[1])

    async def members_of(self, room: str) -> list[str]:
        query = select(room_members.c.user_id).where(room_members.c.room == room).order_by(room_members.c.user_id)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def private_rooms_of(self, user_id: str) -> list[str]:
        query = select(room_members.c.room).where(room_members.c.user_id == user_id).order_by(room_members.c.room)
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def reads_of(self, user_id: str) -> dict[str, int]:
        """How far ``user_id`` has read in each room it has read in."""
        query = select(reads.c.room, reads.c.seq).where(reads.c.user_id == user_id)
        async with self.engine.connect() as conn:
            return {room: int(seq) for room, seq in await conn.execute(query)}

    async def search(
        self, query: str, rooms_: list[str] | None, before: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        """``MessageStore.search`` over the ``messages.search`` tsvector (migrations 0006, 0007),
        ranked by ``ts_rank_cd`` within windows of the newest matches; a window's
        position is ``<ts>.<seq>.<room>`` of the match it starts after."""
        if self._sqlite:
            raise ChatError("unavailable", "search needs a PostgreSQL DATABASE_URL", 503)
        words = search.terms(query)
        cursor = search.Cursor.parse(before)
        after: tuple[int, str, int] | None = None
        if cursor.position:
            ts, seq = cursor.numbers(2)
            room = cursor.position.split(".", 2)[-1]
            if cursor.position.count(".") < 2 or not room:
                raise search.bad_cursor()
            after = (ts, room, seq)
        if not words or rooms_ == []:
            return [], False
        where = ["search @@ to_tsquery('simple', :q)"]
        params: dict[str, Any] = {"q": " & ".join(f"'{w}'" for w in words), "n": search.WINDOW + 1}
        binds = []
        one_room = False
        if rooms_ is not None and len(rooms_) == 1:
            one_room = True
            # one room: newest first is its seq order, so the planner may walk the primary
            # key backwards for a common word or the (room, search) GIN for a rarer one
            where.append("room = :room")
            params["room"] = rooms_[0]
            order = "seq DESC"
            if after is not None:
                where.append("seq < :seq")
                params["seq"] = after[2]
        else:
            if rooms_ is not None:
                where.append("room = ANY(:rooms)")
                params["rooms"] = rooms_
                binds.append(bindparam("rooms", type_=ARRAY(Text)))
            order = "ts DESC, room DESC, seq DESC"
            if after is not None:
                where.append("(ts, room, seq) < (:ts, :room, :seq)")
                params |= {"ts": after[0], "room": after[1], "seq": after[2]}
        sql = text(
            "SELECT c.room, c.seq, c.ts, ts_rank_cd(c.search, to_tsquery('simple', :q)) FROM ("
            f" SELECT room, seq, ts, search FROM messages WHERE {' AND '.join(where)}"
            f" ORDER BY {order} LIMIT :n) c"
        ).bindparams(*binds)
        async with self.engine.connect() as conn:
            if one_room:
                # plan for these words: a generic plan (asyncpg prepares statements) cannot
                # tell a word in most of the room (walk its key) from a rare one (the GIN);
                # many rooms keep the cached plan, which planning a 100-room array would cost
                await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            rows = (await conn.execute(sql, params)).all()
            window = rows[: search.WINDOW]
            # best first; newest first among equals (the window came newest first, and sorted() is stable)
            ranked = sorted(window, key=lambda r: -r[3])
            oldest = f"{window[-1][2]}.{window[-1][1]}.{window[-1][0]}" if window else ""
            shown, more = search.page(ranked, len(rows) > search.WINDOW, cursor, limit, oldest)
            keys = [(room, int(seq)) for (room, seq, _ts, _rank), _ in shown]
            found = {}
            if keys:
                query_ = select(messages.c.room, messages.c.seq, messages.c.body).where(
                    tuple_(messages.c.room, messages.c.seq).in_(keys)
                )
                found = {(r, int(q)): b for r, q, b in await conn.execute(query_)}
        hits = []
        for key, (_, cursor_after) in zip(keys, shown, strict=True):
            if key in found:
                hits.append(search.hit(orjson.loads(found[key]), words, cursor_after))
        return hits, more

    async def rooms(self) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(rooms.c.name).order_by(rooms.c.name))).scalars())


class _Batch:
    """A batch of events collapsed to one row per key: the newest state of each
    message (one INSERT ... ON CONFLICT may not touch a row twice), each update
    once, and each room's highest seq and rev."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.messages: dict[tuple[str, int], dict[str, Any]] = {}
        self.updates: dict[tuple[str, int], dict[str, Any]] = {}
        self.rooms: dict[str, dict[str, Any]] = {}
        self.reads: dict[tuple[str, str], dict[str, Any]] = {}
        for event in events:
            self.add(event)

    def add(self, event: dict[str, Any]) -> None:
        if event.get("type") == "read":
            key = (str(event["user"]), str(event["room"]))
            known = self.reads.get(key)
            if known is None or known["seq"] < int(event["seq"]):
                self.reads[key] = {"user_id": key[0], "room": key[1], "seq": int(event["seq"])}
            return
        message = event["message"]
        room, seq = str(message["room"]), int(message["seq"])
        is_update = event.get("type") == "update"
        rev = int(message.get("rev", event.get("rev", 0) if is_update else 0))
        info = self.rooms.setdefault(room, {"name": room, "epoch": DEFAULT_EPOCH, "last_seq": 0, "last_rev": 0})
        info["last_seq"] = max(info["last_seq"], seq)
        if event.get("epoch"):
            info["epoch"] = str(event["epoch"])
        if is_update:
            update_rev = int(event["rev"])
            info["last_rev"] = max(info["last_rev"], update_rev)
            self.updates.setdefault(
                (room, update_rev),
                {"room": room, "rev": update_rev, "seq": seq, "kind": str(event["kind"]), "ts": int(event["ts"])},
            )
        known = self.messages.get((room, seq))
        if known is None or known["rev"] < rev:
            self.messages[(room, seq)] = {
                "room": room,
                "seq": seq,
                "user_id": str(message["user"]["id"]),
                "client_id": str(message.get("client_id") or f"seq:{seq}"),
                "ts": int(message.get("ts", 0)),
                "rev": rev,
                "body": orjson.dumps(message).decode(),
            }


async def _resolve_dedupe(conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give a message whose (room, user, client_id) is already stored under
    another seq a distinct ``client_id`` column (its body keeps the original),
    so one such message never blocks the archive."""
    taken: dict[tuple[str, str, str], int] = {}
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        keys = [(r["room"], r["user_id"], r["client_id"]) for r in chunk]
        found = await conn.execute(
            select(messages.c.room, messages.c.user_id, messages.c.client_id, messages.c.seq).where(
                tuple_(messages.c.room, messages.c.user_id, messages.c.client_id).in_(keys)
            )
        )
        for room, user_id, client_id, seq in found:
            taken[(room, user_id, client_id)] = int(seq)
    resolved = []
    for row in rows:
        key = (row["room"], row["user_id"], row["client_id"])
        owner = taken.setdefault(key, row["seq"])
        if owner != row["seq"]:
            row = row | {"client_id": f"{row['client_id']}#{row['seq']}"}
        resolved.append(row)
    return resolved
