"""Embedded history: one SQLite file, written by one thread with group commit.

SQLite calls block, so they never run on the event loop: a single-thread
executor owns the connection. Appends and changes (edits, deletes, reactions)
that arrive while a transaction is in flight are queued and committed
together in the next one, so under load many share one fsync and the loop
never waits on disk. Nothing is ever trimmed: a room keeps every message.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy

from backend import lifecycle, search
from backend.db import migrate
from backend.db.schema import metadata
from backend.lifecycle import Change
from backend.models import ChatError, message_id
from backend.store.base import (
    AppendResult,
    ChangeResult,
    Message,
    MessageStore,
    RoomAccess,
    RoomInfo,
    StoreUnavailable,
    Update,
)

_PRAGMAS = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
"""Write-ahead log: readers never wait for the writer, and one fsync per group commit."""

FTS_SHIFT = 1 << 20
"""``messages_fts`` rowids are ``ts * FTS_SHIFT + n`` (migration 0006): newest first is rowid order.
Its ``room`` is the name's UTF-8 in hex: one token, so a room's rows are one posting list."""
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
    "text, room, seq UNINDEXED, tokenize = 'unicode61 remove_diacritics 0')"
)
"""What migration 0006 makes, for an in-memory database (which has no migrations)."""

_AppendRequest = tuple[str, dict[str, str], str, str, int, int | None]


@dataclass(frozen=True, slots=True)
class _Read:
    user_id: str
    room: str
    seq: int
    first: bool


@dataclass(frozen=True, slots=True)
class _Private:
    room: str
    access: RoomAccess
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Member:
    room: str
    user_id: str
    member: bool


_Request = _AppendRequest | Change | _Read | _Private | _Member
CHANGE_IDS = 100_000
"""Recent ``(room, user, client_id)`` of changes remembered for dedupe (a resent edit)."""


class SqliteStore(MessageStore):
    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[tuple[_Request, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._rooms: dict[str, list[Any]] = {}  # name -> [epoch, last_seq, last_rev]; writer thread only
        self._change_ids: OrderedDict[tuple[str, str, str], tuple[int, int]] = OrderedDict()  # -> (seq, rev)
        self._fts_last: tuple[int, int] | None = None
        """The newest ``messages_fts`` rowid's (ts, n) the writer gave; writer thread only."""
        self._reader: sqlite3.Connection | None = None
        self._search_executor: ThreadPoolExecutor | None = None
        """Searches run on a thread and connection of their own: a long one never delays a write."""

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        await self._run(self._connect)

    def _connect(self) -> None:
        if self._path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            # the system of record's schema and migrations (backend/db): a file of any earlier release is upgraded
            migrate.upgrade("sqlite:///" + os.path.abspath(self._path))
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.executescript(_PRAGMAS)
        if self._path == ":memory:":
            metadata.create_all(sqlalchemy.create_engine("sqlite://", creator=lambda: db))
            db.execute(_FTS_TABLE)
        self._reload_rooms(db)
        self._db = db

    def _open_reader(self) -> None:
        reader = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        reader.execute("PRAGMA query_only = ON")
        self._reader = reader

    async def close(self) -> None:
        if self._flusher:
            await asyncio.shield(self._flusher)
        if self._search_executor is not None:
            if self._reader is not None:
                await asyncio.get_running_loop().run_in_executor(self._search_executor, self._reader.close)
                self._reader = None
            self._search_executor.shutdown(wait=True)
            self._search_executor = None
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

    async def append(
        self, room: str, user: dict[str, str], text: str, client_id: str, ts: int, reply_to: int | None = None
    ) -> AppendResult:
        return await self._queue((room, user, text, client_id, ts, reply_to))

    async def change(self, change: Change) -> ChangeResult:
        return await self._queue(change)

    async def mark_read(self, user_id: str, room: str, seq: int, first: bool = False) -> int:
        return await self._queue(_Read(user_id, room, seq, first))

    async def access(self, room: str) -> RoomAccess | None:
        row = await self._read_one("SELECT dm, owner FROM room_access WHERE room = ?", room)
        return None if row is None else RoomAccess(bool(row[0]), row[1])

    async def create_private(self, room: str, access: RoomAccess, members: list[str]) -> bool:
        return await self._queue(_Private(room, access, tuple(members)))

    async def set_member(self, room: str, user_id: str, member: bool) -> bool:
        return await self._queue(_Member(room, user_id, member))

    async def is_member(self, room: str, user_id: str) -> bool:
        return (
            await self._read_one("SELECT 1 FROM room_members WHERE room = ? AND user_id = ?", room, user_id) is not None
        )

    async def members_of(self, room: str) -> list[str]:
        return [
            r[0] for r in await self._read_all("SELECT user_id FROM room_members WHERE room = ? ORDER BY user_id", room)
        ]

    async def private_rooms(self) -> set[str]:
        return {r[0] for r in await self._read_all("SELECT room FROM room_access")}

    async def private_rooms_of(self, user_id: str) -> list[str]:
        rows = await self._read_all("SELECT room FROM room_members WHERE user_id = ? ORDER BY room", user_id)
        return [r[0] for r in rows]

    async def _read_one(self, sql: str, *args: Any) -> Any:
        return await self._run(lambda: self._db.execute(sql, args).fetchone())  # type: ignore[union-attr]

    async def _read_all(self, sql: str, *args: Any) -> list[Any]:
        return await self._run(lambda: self._db.execute(sql, args).fetchall())  # type: ignore[union-attr]

    async def reads_of(self, user_id: str) -> dict[str, int]:
        def read() -> dict[str, int]:
            assert self._db is not None
            return dict(self._db.execute("SELECT room, seq FROM reads WHERE user_id = ?", (user_id,)).fetchall())

        return await self._run(read)

    async def _queue(self, request: _Request) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
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
                    if fut.done():
                        continue
                    if isinstance(result, ChatError):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)
        finally:
            self._flusher = None

    def _room_row(self, db: sqlite3.Connection, room: str) -> list[Any]:
        row = self._rooms.get(room)
        if row is None:
            row = [secrets.token_hex(8), 0, 0]
            db.execute("INSERT INTO rooms (name, epoch, last_seq) VALUES (?, ?, 0)", (room, row[0]))
            self._rooms[room] = row
        return row

    def _write_batch(self, batch: list[_Request]) -> list[Any]:
        db = self._db
        assert db is not None
        results: list[Any] = []
        touched: set[str] = set()
        remembered: list[tuple[tuple[str, str, str], tuple[int, int]]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for request in batch:
                try:
                    if isinstance(request, _Read):
                        results.append(self._write_read(db, request))
                    elif isinstance(request, _Private):
                        results.append(self._write_private(db, request))
                    elif isinstance(request, _Member):
                        results.append(self._write_member(db, request))
                    elif isinstance(request, Change):
                        results.append(self._write_change(db, request, remembered))
                        touched.add(request.room)
                    else:
                        results.append(self._write_message(db, *request))
                        touched.add(request[0])
                except ChatError as exc:
                    results.append(exc)
            for room in touched:
                _, last_seq, last_rev = self._rooms[room]
                db.execute("UPDATE rooms SET last_seq = ?, last_rev = ? WHERE name = ?", (last_seq, last_rev, room))
            db.execute("COMMIT")
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # a failed COMMIT has rolled back already
            self._reload_rooms(db)
            self._fts_last = None
            raise
        for key, value in remembered:
            self._change_ids[key] = value
            if len(self._change_ids) > CHANGE_IDS:
                self._change_ids.popitem(last=False)
        return results

    def _write_private(self, db: sqlite3.Connection, request: _Private) -> bool:
        if request.room in self._rooms:
            return False
        db.execute(
            "INSERT INTO room_access (room, dm, owner) VALUES (?, ?, ?)",
            (request.room, request.access.dm, request.access.owner),
        )
        db.executemany(
            "INSERT OR IGNORE INTO room_members (room, user_id) VALUES (?, ?)",
            [(request.room, user) for user in request.members],
        )
        self._room_row(db, request.room)
        return True

    @staticmethod
    def _write_member(db: sqlite3.Connection, request: _Member) -> bool:
        if request.member:
            sql = "INSERT OR IGNORE INTO room_members (room, user_id) VALUES (?, ?)"
        else:
            sql = "DELETE FROM room_members WHERE room = ? AND user_id = ?"
        return db.execute(sql, (request.room, request.user_id)).rowcount > 0

    @staticmethod
    def _write_read(db: sqlite3.Connection, read: _Read) -> int:
        row = db.execute("SELECT seq FROM reads WHERE user_id = ? AND room = ?", (read.user_id, read.room)).fetchone()
        if row is not None and (read.first or row[0] >= read.seq):
            return int(row[0])
        db.execute(
            "INSERT INTO reads (user_id, room, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, room) DO UPDATE SET seq = excluded.seq",
            (read.user_id, read.room, read.seq),
        )
        return read.seq

    def _write_message(
        self,
        db: sqlite3.Connection,
        room: str,
        user: dict[str, str],
        text: str,
        client_id: str,
        ts: int,
        reply_to: int | None,
    ) -> AppendResult:
        found = db.execute(
            "SELECT body FROM messages WHERE room = ? AND user_id = ? AND client_id = ?",
            (room, user["id"], client_id),
        ).fetchone()
        if found:
            return AppendResult(orjson.loads(found[0]), created=False)
        row = self._room_row(db, room)
        if reply_to is not None and not 1 <= reply_to <= row[1]:
            raise lifecycle.refusal("reply_to")
        seq = row[1] + 1
        message: Message = {
            "id": message_id(seq),
            "seq": seq,
            "room": room,
            "user": user,
            "text": text,
            "ts": ts,
            "client_id": client_id,
        }
        if reply_to is not None:
            message["reply_to"] = message_id(reply_to)
        db.execute(
            "INSERT INTO messages (room, seq, user_id, client_id, ts, rev, body) VALUES (?, ?, ?, ?, ?, 0, ?)",
            (room, seq, user["id"], client_id, ts, orjson.dumps(message).decode()),
        )
        self._index(db, ts, room, seq, text)
        row[1] = seq
        return AppendResult(message, created=True)

    def _write_change(
        self, db: sqlite3.Connection, change: Change, remembered: list[tuple[tuple[str, str, str], tuple[int, int]]]
    ) -> ChangeResult:
        key = (change.room, change.actor["id"], change.client_id)
        seen = self._change_ids.get(key) or next((v for k, v in remembered if k == key), None)
        found = db.execute("SELECT body FROM messages WHERE room = ? AND seq = ?", (change.room, change.seq)).fetchone()
        if found is None:
            raise lifecycle.refusal("not_found")
        message = orjson.loads(found[0])
        if seen is not None and seen[0] == change.seq:
            return ChangeResult(lifecycle.update_event(message, change.kind, message.get("rev", 0)), created=False)
        new = lifecycle.apply(message, change)
        if new is None:
            return ChangeResult(lifecycle.update_event(message, change.kind, message.get("rev", 0)), created=False)
        row = self._rooms[change.room]
        rev = row[2] + 1
        new["rev"] = rev
        db.execute(
            "UPDATE messages SET body = ?, rev = ? WHERE room = ? AND seq = ?",
            (orjson.dumps(new).decode(), rev, change.room, change.seq),
        )
        if new.get("text") != message.get("text"):
            self._reindex(db, int(message.get("ts", 0)), change.room, change.seq, str(new.get("text") or ""))
        db.execute(
            "INSERT INTO updates (room, rev, seq, kind, ts) VALUES (?, ?, ?, ?, ?)",
            (change.room, rev, change.seq, change.kind, change.ts),
        )
        row[2] = rev
        remembered.append((key, (change.seq, rev)))
        return ChangeResult(lifecycle.update_event(new, change.kind, rev), created=True)

    def _index(self, db: sqlite3.Connection, ts: int, room: str, seq: int, text: str) -> None:
        """Add a message's text to ``messages_fts``, in the append's transaction."""
        last = self._fts_last
        if last is not None and last[0] == ts:
            n = last[1] + 1
        elif last is not None and last[0] < ts:
            n = 0
        else:  # the first of this run, or the clock went back: ask the index
            found = db.execute(
                "SELECT MAX(rowid) FROM messages_fts WHERE rowid BETWEEN ? AND ?",
                (ts * FTS_SHIFT, (ts + 1) * FTS_SHIFT - 1),
            ).fetchone()[0]
            n = 0 if found is None else found - ts * FTS_SHIFT + 1
        db.execute(
            "INSERT INTO messages_fts (rowid, text, room, seq) VALUES (?, ?, ?, ?)",
            (ts * FTS_SHIFT + n, text, room.encode().hex(), seq),
        )
        if last is None or last[0] <= ts:
            self._fts_last = (ts, n)

    def _reindex(self, db: sqlite3.Connection, ts: int, room: str, seq: int, text: str) -> None:
        """An edit replaces the message's indexed text; a delete (no text) removes it."""
        found = db.execute(
            "SELECT rowid FROM messages_fts WHERE rowid BETWEEN ? AND ? AND room = ? AND seq = ?",
            (ts * FTS_SHIFT, (ts + 1) * FTS_SHIFT - 1, room.encode().hex(), seq),
        ).fetchone()
        if found is None:
            if text:
                self._index(db, ts, room, seq, text)
        elif text:
            db.execute("UPDATE messages_fts SET text = ? WHERE rowid = ?", (text, found[0]))
        else:
            db.execute("DELETE FROM messages_fts WHERE rowid = ?", (found[0],))

    def _reload_rooms(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT name, epoch, last_seq, last_rev FROM rooms")
        self._rooms = {n: [e, s, r] for n, e, s, r in rows}

    # -- reads ----------------------------------------------------------------

    async def room_info(self, room: str, create: bool = True) -> RoomInfo | None:
        def read() -> RoomInfo | None:
            assert self._db is not None
            if room not in self._rooms:
                if not create:
                    return None
                self._room_row(self._db, room)
            epoch, last_seq, last_rev = self._rooms[room]
            return RoomInfo(epoch, last_seq, last_rev)

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

    async def updates_after(self, room: str, after_rev: int, limit: int) -> list[Update]:
        def read() -> list[Update]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT u.rev, u.kind, m.body FROM updates u JOIN messages m ON m.room = u.room AND m.seq = u.seq"
                " WHERE u.room = ? AND u.rev > ? ORDER BY u.rev LIMIT ?",
                (room, after_rev, limit),
            ).fetchall()
            return [lifecycle.update_event(orjson.loads(body), kind, rev) for rev, kind, body in rows]

        return await self._run(read)

    async def changed_since(self, room: str, after_rev: int, upto_seq: int, limit: int) -> tuple[list[Update], bool]:
        def read() -> tuple[list[Update], bool]:
            assert self._db is not None
            rows = self._db.execute(
                "SELECT u.rev, u.kind, m.body FROM updates u JOIN messages m ON m.room = u.room AND m.seq = u.seq"
                " WHERE u.room = ? AND u.rev > ? AND u.seq <= ?"
                " AND u.rev = (SELECT MAX(rev) FROM updates l WHERE l.room = u.room AND l.seq = u.seq)"
                " ORDER BY u.rev DESC LIMIT ?",
                (room, after_rev, upto_seq, limit + 1),
            ).fetchall()
            kept = reversed(rows[:limit])
            return [lifecycle.update_event(orjson.loads(body), kind, rev) for rev, kind, body in kept], len(
                rows
            ) > limit

        return await self._run(read)

    async def rooms(self) -> list[str]:
        return await self._run(lambda: sorted(self._rooms))

    async def search(
        self, query: str, rooms: list[str] | None, before: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        words = search.terms(query)
        cursor = search.Cursor.parse(before)
        upto = cursor.numbers(1)[0] if cursor.position else 2**63 - 1
        if not words or rooms == []:
            return [], False
        if rooms is not None and len(rooms) > 1:
            try:
                if set(rooms).issuperset(list(self._rooms)):
                    rooms = None  # every room: no filter to check per match
            except RuntimeError:
                pass  # the writer added a room meanwhile: keep the filter

        def read() -> tuple[list[Message], bool]:
            db = self._db if self._path == ":memory:" else self._reader
            if db is None:
                self._open_reader()
                db = self._reader
            assert db is not None
            match = "{text} : (" + " ".join(f'"{w}"' for w in words) + ")"
            args: list[Any] = []
            if rooms is not None and len(rooms) == 1:
                # one token per room: the index finds the room's rows itself. The window's
                # rowids come from the index alone and their texts by a join on FTS5's own
                # content table (c0 text, c1 room, c2 seq): a fifth cheaper than FTS5 reading
                # each match's columns, which are scattered one a page (bench/README.md, search)
                match = '{room} : "' + rooms[0].encode().hex() + '" AND ' + match
                sql = (
                    "SELECT c.id, c.c1, c.c2, c.c0 FROM (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?"
                    " AND rowid < ? ORDER BY rowid DESC LIMIT ?) f JOIN messages_fts_content c ON c.id = f.rowid"
                    " ORDER BY c.id DESC"
                )
            else:
                sql = "SELECT rowid, room, seq, text FROM messages_fts WHERE messages_fts MATCH ?"
                if rooms is not None:
                    sql += " AND room IN (SELECT value FROM json_each(?))"
                    args.append(orjson.dumps([r.encode().hex() for r in rooms]).decode())
                sql += " AND rowid < ? ORDER BY rowid DESC LIMIT ?"
            args += [upto, search.WINDOW + 1]
            rows = db.execute(sql, [match, *args]).fetchall()
            window = rows[: search.WINDOW]
            scores = search.bm25([r[3] for r in window], words)
            # best first, newest first among equals (the window came newest first, and sorted() is stable)
            ranked = [r for _, r in sorted(zip(scores, window, strict=True), key=lambda p: -p[0])]
            oldest = str(window[-1][0]) if window else ""
            shown, more = search.page(ranked, len(rows) > search.WINDOW, cursor, limit, oldest)
            hits = []
            for (_, room, seq, _text), after in shown:
                found = db.execute(
                    "SELECT body FROM messages WHERE room = ? AND seq = ?", (bytes.fromhex(room).decode(), seq)
                ).fetchone()
                if found is not None:
                    hits.append(search.hit(orjson.loads(found[0]), words, after))
            return hits, more

        if self._path == ":memory:":
            return await self._run(read)
        if self._search_executor is None:
            self._search_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-search")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._search_executor, read)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
