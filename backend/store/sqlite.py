"""Embedded history: one SQLite file, written by one thread with group commit.

SQLite calls block, so they never run on the event loop: a single-thread
executor owns the connection. Appends that arrive while a transaction is in
flight are queued and committed together in the next one, so under load many
messages share one fsync and the loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from backend.models import message_id
from backend.store.base import (
    AppendResult,
    Message,
    MessageStore,
    RoomInfo,
    StoreUnavailable,
)

_SCHEMA = """
PRAGMA journal_mode=WAL;
PRAGMA synchronous=NORMAL;
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS messages_dedupe ON messages (room, user_id, client_id);
"""

_AppendRequest = tuple[str, dict[str, str], str, str, int]


class SqliteStore(MessageStore):
    def __init__(self, path: str, history_limit: int) -> None:
        self._path = path
        self._history_limit = history_limit
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[_AppendRequest, asyncio.Future[AppendResult]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rooms: dict[str, list[Any]] = {}  # name -> [epoch, last_seq]; writer thread only

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        await self._run(self._connect)

    def _connect(self) -> None:
        if self._path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.executescript(_SCHEMA)
        for name, epoch, last_seq in db.execute("SELECT name, epoch, last_seq FROM rooms"):
            self._rooms[name] = [epoch, last_seq]
        self._db = db

    async def close(self) -> None:
        if self._flusher:
            await asyncio.shield(self._flusher)
        if self._executor:
            if self._db is not None:
                await self._run(self._db.close)
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._executor is None:
            raise StoreUnavailable("store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return await self._run(lambda: self._db is not None and self._db.execute("SELECT 1").fetchone() == (1,))
        except StoreUnavailable:
            return False

    # -- writes ---------------------------------------------------------------

    async def append(self, room: str, user: dict[str, str], text: str, client_id: str, ts: int) -> AppendResult:
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append(((room, user, text, client_id, ts), future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._run(self._write_batch, [req for req, _ in batch])
                except Exception as exc:  # every waiter learns the batch failed
                    error = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(str(exc))
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(error)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._flusher = None

    def _room_row(self, db: sqlite3.Connection, room: str) -> list[Any]:
        row = self._rooms.get(room)
        if row is None:
            row = [secrets.token_hex(8), 0]
            db.execute("INSERT INTO rooms (name, epoch, last_seq) VALUES (?, ?, 0)", (room, row[0]))
            self._rooms[room] = row
        return row

    def _write_batch(self, batch: list[_AppendRequest]) -> list[AppendResult]:
        db = self._db
        assert db is not None
        results: list[AppendResult] = []
        touched: dict[str, int] = {}  # room -> its last seq before this batch
        db.execute("BEGIN IMMEDIATE")
        try:
            for room, user, text, client_id, ts in batch:
                found = db.execute(
                    "SELECT body FROM messages WHERE room = ? AND user_id = ? AND client_id = ?",
                    (room, user["id"], client_id),
                ).fetchone()
                if found:
                    results.append(AppendResult(orjson.loads(found[0]), created=False))
                    continue
                row = self._room_row(db, room)
                seq = row[1] + 1
                message = {
                    "id": message_id(seq),
                    "seq": seq,
                    "room": room,
                    "user": user,
                    "text": text,
                    "ts": ts,
                    "client_id": client_id,
                }
                db.execute(
                    "INSERT INTO messages (room, seq, user_id, client_id, body) VALUES (?, ?, ?, ?, ?)",
                    (room, seq, user["id"], client_id, orjson.dumps(message)),
                )
                touched.setdefault(room, row[1])
                row[1] = seq
                results.append(AppendResult(message, created=True))
            for room, before in touched.items():
                last = self._rooms[room][1]
                db.execute("UPDATE rooms SET last_seq = ? WHERE name = ?", (last, room))
                if before // 100 != last // 100 and last > self._history_limit:  # trim every 100 messages
                    db.execute("DELETE FROM messages WHERE room = ? AND seq <= ?", (room, last - self._history_limit))
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT has rolled back already
            self._reload_rooms(db)
            raise
        return results

    def _reload_rooms(self, db: sqlite3.Connection) -> None:
        self._rooms = {n: [e, s] for n, e, s in db.execute("SELECT name, epoch, last_seq FROM rooms")}

    # -- reads ----------------------------------------------------------------

    async def room_info(self, room: str, create: bool = True) -> RoomInfo | None:
        def read() -> RoomInfo | None:
            assert self._db is not None
            if room not in self._rooms:
                if not create:
                    return None
                self._room_row(self._db, room)
            epoch, last_seq = self._rooms[room]
            return RoomInfo(epoch, last_seq)

        return await self._run(read)

    async def latest(self, room: str, limit: int, before_seq: int | None = None) -> tuple[list[Message], bool]:
        def read() -> tuple[list[Message], bool]:
            assert self._db is not None
            bound = before_seq if before_seq is not None else 2**62
            rows = self._db.execute(
                "SELECT body FROM messages WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (room, bound, limit + 1),
            ).fetchall()
            more = len(rows) > limit
            return [orjson.loads(r[0]) for r in reversed(rows[:limit])], more

        return await self._run(read)

    async def after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        def read() -> list[Message]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT body FROM messages WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
                (room, after_seq, limit),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows]

        return await self._run(read)

    async def rooms(self) -> list[str]:
        return await self._run(lambda: sorted(self._rooms))
