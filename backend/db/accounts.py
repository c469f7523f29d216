"""Accounts in the system of record: a fleet with ``DATABASE_URL`` keeps who may
sign in in the database, so a Redis that loses its data loses sessions (users
sign in again) but never an account, and nobody can take a lost username.

Sessions and failed-login counts stay in Redis exactly as ``RedisAccounts``
keeps them: short-lived, and needed at once by every instance.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.accounts import Account, RedisAccounts, UsernameTaken, _new_id, _now_ms
from backend.db.schema import accounts
from backend.db.urls import driver_url, is_sqlite
from backend.store.base import StoreUnavailable

log = logging.getLogger("fleetchat.accounts")

_COLUMNS = (accounts.c.id, accounts.c.username, accounts.c.name, accounts.c.password_hash, accounts.c.created_at)
"""In ``Account``'s field order, so a row is ``Account(*row)``."""


class PostgresAccounts(RedisAccounts):
    """Fleet mode with a database: accounts in its ``accounts`` table, sessions
    and failure counts in Redis (inherited from ``RedisAccounts``).

    A fleet that kept accounts only in Redis before it had a database keeps
    them: an account the database lacks is looked up in Redis and copied in on
    first use, and ``create`` refuses a username either one has."""

    def __init__(self, redis_url: str, database_url: str) -> None:
        super().__init__(redis_url)
        self._database_url = driver_url(database_url)
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
        await super().open()
        sqlite_db = is_sqlite(self._database_url)
        # A short connect timeout: a sign-in answers 503 soon rather than hang while the database is down.
        connect_args: dict[str, Any] = {"timeout": 10} if sqlite_db else {"timeout": 5, "command_timeout": 10}
        self._engine = create_async_engine(self._database_url, pool_pre_ping=True, connect_args=connect_args)
        self._insert = sqlite.insert if sqlite_db else postgresql.insert

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        await super().close()

    @property
    def _db(self) -> AsyncEngine:
        assert self._engine is not None, "open() first"
        return self._engine

    async def _first(self, where: ColumnElement[bool]) -> Account | None:
        try:
            async with self._db.connect() as conn:
                row = (await conn.execute(select(*_COLUMNS).where(where))).first()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"database: {exc}") from exc
        return Account(*row) if row else None

    async def _insert_account(self, account: Account, if_new: bool = False) -> int:
        """Insert ``account``; with ``if_new``, do nothing when its id or username is
        in use. How many rows it added (0 or 1)."""
        stmt = self._insert(accounts).values(**dataclasses.asdict(account))
        if if_new:
            stmt = stmt.on_conflict_do_nothing()
        try:
            async with self._db.begin() as conn:
                return (await conn.execute(stmt)).rowcount
        except IntegrityError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"database: {exc}") from exc

    async def create(self, username: str, name: str, password_hash: str) -> Account:
        # A legacy account lives only in Redis until its first use: its name is taken too.
        if await super().by_username(username) is not None:
            raise UsernameTaken(username)
        account = Account(_new_id(), username, name, password_hash, _now_ms())
        try:
            await self._insert_account(account)  # the unique username decides between two sign-ups
        except IntegrityError:
            raise UsernameTaken(username) from None
        return account

    async def by_username(self, username: str) -> Account | None:
        where = accounts.c.username == username
        found = await self._first(where)
        if found is None:
            found = await self._adopt(await super().by_username(username), where)
        return found

    async def by_id(self, account_id: str) -> Account | None:
        where = accounts.c.id == account_id
        found = await self._first(where)
        if found is None:
            found = await self._adopt(await super().by_id(account_id), where)
        return found

    async def _adopt(self, legacy: Account | None, where: ColumnElement[bool]) -> Account | None:
        """Copy a Redis-only account into the database; what the database then holds.
        The database wins a conflict: should another account hold the username there,
        that one is the owner and the legacy record is ignored."""
        if legacy is None:
            return None
        await self._insert_account(legacy, if_new=True)
        found = await self._first(where)
        if found is None or found.id != legacy.id:
            log.warning("legacy account %s (%s) conflicts with the database's: ignored", legacy.id, legacy.username)
        else:
            log.info("copied legacy account %s (%s) from Redis into the database", legacy.id, legacy.username)
        return found

    async def copy_legacy(self) -> int:
        """Copy every Redis-only account into the database at once (``copy-accounts``),
        rather than on each one's first use: then a Redis loss costs none of them.
        Idempotent; how many it added."""
        copied = 0
        async for legacy in super().all_accounts():
            copied += await self._insert_account(legacy, if_new=True)
        return copied
