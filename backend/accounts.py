"""Accounts, their sign-in sessions, and failed-login counts: one contract, three stores.

Embedded mode keeps them in the SQLite file next to the history. A fleet
keeps sessions and failure counts in Redis, so every instance sees a logout
and a failed login at once; its accounts live in the system of record when
``DATABASE_URL`` is set (``backend.db.accounts.PostgresAccounts``: a Redis
that loses its data then costs sessions, never an account), else in Redis.
A token names a session; a session that ends (logout) refuses the token on
every transport and instance from then on.

Operators add an account from the shell:
``python -m backend.accounts create USERNAME [--name "Display Name"]``
(the password is read from the terminal, or from stdin with ``--password-stdin``);
a fleet that kept accounts in Redis copies them into its new database with
``python -m backend.accounts copy-accounts``.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import getpass
import os
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from backend import redis_client
from backend.config import Settings, get_settings
from backend.models import ChatError
from backend.redis_client import AnyRedis
from backend.store.base import StoreUnavailable

USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
"""A username is a slug: lowercase letters, digits, ``_ . -``; 2 to 32 characters."""


class UsernameTaken(Exception):
    """Someone has that username already (case-insensitively)."""


def normalize_username(raw: Any) -> str:
    """The stored form of a username, or ``ChatError('bad_request')`` saying why not."""
    if not isinstance(raw, str):
        raise ChatError("bad_request", "username must be a string", 400)
    username = raw.strip().casefold()
    if not USERNAME.match(username):
        raise ChatError(
            "bad_request",
            "a username has 2 to 32 characters (letters, digits, '_', '.', '-'), a letter or digit first",
        )
    return username


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    username: str
    name: str
    password_hash: str
    created_at: int
    """Milliseconds since the epoch."""

    def public(self) -> dict[str, str]:
        """The account as users see it (the protocol's user object)."""
        return {"id": self.id, "username": self.username, "name": self.name}


class AccountStore(abc.ABC):
    """All methods may raise ``StoreUnavailable``."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def create(self, username: str, name: str, password_hash: str) -> Account:
        """Add an account; ``UsernameTaken`` when the username is in use."""

    @abc.abstractmethod
    async def by_username(self, username: str) -> Account | None: ...

    @abc.abstractmethod
    async def by_id(self, account_id: str) -> Account | None: ...

    @abc.abstractmethod
    async def start_session(self, account_id: str, ttl: float) -> str:
        """A new sign-in session of the account, valid for ``ttl`` seconds; its id."""

    @abc.abstractmethod
    async def session_account(self, session: str) -> str | None:
        """The account id of a live session; None once it ended or expired."""

    @abc.abstractmethod
    async def end_session(self, session: str) -> None: ...

    @abc.abstractmethod
    async def count_failure(self, key: str, window: float) -> int:
        """Record a failed login under ``key``; the failures within the window."""

    @abc.abstractmethod
    async def failures(self, key: str) -> tuple[int, float]:
        """Failed logins under ``key`` in the current window, and seconds until it ends."""


def _new_id() -> str:
    return "u_" + secrets.token_hex(8)


def _now_ms() -> int:
    return int(time.time() * 1000)


_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER
);
"""


class SqliteAccounts(AccountStore):
    """Embedded mode: tables in the chat's SQLite file, on a thread of their own."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        # One process: failed logins are counted in memory. key -> (count, window end)
        self._failures: dict[str, tuple[int, float]] = {}

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-accounts")
        await self._run(self._connect)

    def _connect(self) -> None:
        if self._path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=10)
        db.executescript(_SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._executor is not None:
            if self._db is not None:
                await self._run(self._db.close)
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    def _row(self, sql: str, *args: Any) -> Account | None:
        assert self._db is not None
        row = self._db.execute(sql, args).fetchone()
        return Account(*row) if row else None

    async def create(self, username: str, name: str, password_hash: str) -> Account:
        account = Account(_new_id(), username, name, password_hash, _now_ms())

        def insert() -> None:
            assert self._db is not None
            self._db.execute(
                "INSERT INTO accounts (id, username, name, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (account.id, account.username, account.name, account.password_hash, account.created_at),
            )

        try:
            await self._run(insert)
        except sqlite3.IntegrityError:
            raise UsernameTaken(username) from None
        return account

    async def by_username(self, username: str) -> Account | None:
        sql = "SELECT id, username, name, password_hash, created_at FROM accounts WHERE username = ?"
        return await self._run(self._row, sql, username)

    async def by_id(self, account_id: str) -> Account | None:
        sql = "SELECT id, username, name, password_hash, created_at FROM accounts WHERE id = ?"
        return await self._run(self._row, sql, account_id)

    async def start_session(self, account_id: str, ttl: float) -> str:
        session, now = secrets.token_urlsafe(18), _now_ms()

        def insert() -> None:
            assert self._db is not None
            self._db.execute(
                "INSERT INTO sessions (id, account_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (session, account_id, now, now + int(ttl * 1000)),
            )

        await self._run(insert)
        return session

    async def session_account(self, session: str) -> str | None:
        def read() -> str | None:
            assert self._db is not None
            row = self._db.execute(
                "SELECT account_id FROM sessions WHERE id = ? AND ended_at IS NULL AND expires_at > ?",
                (session, _now_ms()),
            ).fetchone()
            return row[0] if row else None

        return await self._run(read)

    async def end_session(self, session: str) -> None:
        def update() -> None:
            assert self._db is not None
            self._db.execute("UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL", (_now_ms(), session))

        await self._run(update)

    async def count_failure(self, key: str, window: float) -> int:
        now = time.monotonic()
        count, ends = self._failures.get(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window
        self._failures[key] = (count + 1, ends)
        if len(self._failures) > 100_000:  # forget windows that ended
            self._failures = {k: v for k, v in self._failures.items() if v[1] > now}
        return count + 1

    async def failures(self, key: str) -> tuple[int, float]:
        count, ends = self._failures.get(key, (0, 0.0))
        left = ends - time.monotonic()
        return (count, left) if left > 0 else (0, 0.0)


class RedisAccounts(AccountStore):
    """Fleet mode: accounts, sessions and failure counts in Redis, shared by every instance."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.redis: AnyRedis | None = None

    async def open(self) -> None:
        try:
            self.redis = await redis_client.connect(self._url, socket_timeout=5, socket_connect_timeout=5)
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    @property
    def _r(self) -> AnyRedis:
        assert self.redis is not None
        return self.redis

    async def create(self, username: str, name: str, password_hash: str) -> Account:
        account = Account(_new_id(), username, name, password_hash, _now_ms())
        # The username key is taken first and atomically: two sign-ups for one name cannot both win.
        if not await self._call(self._r.set(f"fc:username:{username}", account.id, nx=True)):
            raise UsernameTaken(username)
        fields = {
            "id": account.id,
            "username": username,
            "name": name,
            "password_hash": password_hash,
            "created_at": account.created_at,
        }
        await self._call(self._r.hset(f"fc:account:{account.id}", mapping=fields))
        return account

    async def by_id(self, account_id: str) -> Account | None:
        return await self._record(account_id)

    async def _record(self, account_id: str) -> Account | None:
        """The account's Redis record; what subclasses that keep accounts elsewhere read as legacy."""
        raw = await self._call(self._r.hgetall(f"fc:account:{account_id}"))
        if not raw:
            return None
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return Account(f["id"], f["username"], f["name"], f["password_hash"], int(f["created_at"]))

    async def all_accounts(self) -> AsyncIterator[Account]:
        """Every account (SCAN: in batches, without blocking Redis), for copying them elsewhere."""
        try:
            async for key in self._r.scan_iter(match="fc:account:*", count=500):
                account = await self._record(key.decode().removeprefix("fc:account:"))
                if account is not None:
                    yield account
        except RedisError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def by_username(self, username: str) -> Account | None:
        account_id = await self._call(self._r.get(f"fc:username:{username}"))
        return await self._record(account_id.decode()) if account_id else None

    async def start_session(self, account_id: str, ttl: float) -> str:
        session = secrets.token_urlsafe(18)
        await self._call(self._r.set(f"fc:session:{session}", account_id, ex=max(1, int(ttl))))
        return session

    async def session_account(self, session: str) -> str | None:
        account_id = await self._call(self._r.get(f"fc:session:{session}"))
        return account_id.decode() if account_id else None

    async def end_session(self, session: str) -> None:
        await self._call(self._r.delete(f"fc:session:{session}"))

    async def count_failure(self, key: str, window: float) -> int:
        pipe = self._r.pipeline(transaction=True)
        pipe.incr(f"fc:loginfail:{key}")
        pipe.expire(f"fc:loginfail:{key}", max(1, int(window)), nx=True)
        count, _ = await self._call(pipe.execute())
        return int(count)

    async def failures(self, key: str) -> tuple[int, float]:
        pipe = self._r.pipeline(transaction=False)
        pipe.get(f"fc:loginfail:{key}")
        pipe.pttl(f"fc:loginfail:{key}")
        count, ttl_ms = await self._call(pipe.execute())
        return (int(count), max(ttl_ms, 0) / 1000) if count else (0, 0.0)


def build_accounts(settings: Settings) -> AccountStore:
    """The database (sessions in Redis) with ``REDIS_URL`` and ``DATABASE_URL``;
    Redis alone with only ``REDIS_URL`` (shared by the fleet); else the embedded SQLite file."""
    if settings.redis_url and settings.database_url:
        from backend.db.accounts import PostgresAccounts  # imports this module

        return PostgresAccounts(settings.redis_url, settings.database_url)
    if settings.redis_url:
        return RedisAccounts(settings.redis_url)
    return SqliteAccounts(settings.db_path)


async def _create_from_shell(username: str, name: str, password: str) -> Account:
    from backend.passwords import hash_password, weakness

    why = weakness(password)
    if why:
        raise ChatError("weak_password", why)
    store = build_accounts(get_settings())
    await store.open()
    try:
        return await store.create(normalize_username(username), name or username, await hash_password(password))
    finally:
        await store.close()


async def _copy_from_shell() -> int | None:
    """Copy a fleet's Redis-only accounts into its database; None without one."""
    store = build_accounts(get_settings())
    copy = getattr(store, "copy_legacy", None)
    if copy is None:
        return None
    await store.open()
    try:
        return await copy()
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.accounts", description="Manage fleetchat accounts.")
    sub = ap.add_subparsers(dest="command", required=True)
    create = sub.add_parser(
        "create", help="add an account (uses REDIS_URL, DATABASE_URL or CHAT_DB_PATH like the server)"
    )
    create.add_argument("username")
    create.add_argument("--name", default="", help="display name (default: the username)")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sub.add_parser(
        "copy-accounts",
        help="copy a fleet's accounts from Redis into DATABASE_URL (those the database lacks; safe to rerun)",
    )
    args = ap.parse_args(argv)
    if args.command == "copy-accounts":
        try:
            copied = asyncio.run(_copy_from_shell())
        except StoreUnavailable as exc:
            print(f"the store is unreachable: {exc}", file=sys.stderr)
            return 1
        if copied is None:
            print("copy-accounts needs REDIS_URL and DATABASE_URL", file=sys.stderr)
            return 2
        print(f"copied {copied} accounts from Redis into the database")
        return 0
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 2
    try:
        account = asyncio.run(_create_from_shell(args.username, args.name.strip(), password))
    except ChatError as exc:
        print(exc.detail, file=sys.stderr)
        return 2
    except UsernameTaken:
        print(f"username {args.username!r} is taken", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"the store is unreachable: {exc}", file=sys.stderr)
        return 1
    print(f"created {account.username} ({account.id})")
    return 0


if __name__ == "__main__":
    # Run as backend.accounts, not as this __main__ copy: the stores other modules
    # define (backend.db.accounts) raise that module's UsernameTaken, not this copy's.
    from backend import accounts

    sys.exit(accounts.main())
