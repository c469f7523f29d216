"""The ``AccountStore`` contract over every store (the embedded SQLite file, Redis,
and the database with sessions in Redis), then what the database buys a fleet:
accounts that outlive a Redis losing its data, and Redis-only accounts of a
fleet from before the database, kept."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from backend.accounts import Account, AccountStore, RedisAccounts, SqliteAccounts, UsernameTaken, build_accounts
from backend.config import Settings
from backend.db.accounts import PostgresAccounts
from backend.db.migrate import upgrade
from backend.db.schema import accounts
from backend.db.urls import driver_url
from backend.store.base import StoreUnavailable
from tests.security.helpers import request, try_connect
from tests.support import ROOT, Backend, PostgresServer, RedisServer, async_wait_for

PASSWORD = "correct horse battery"
SECRET = "a-fixed-signing-secret-of-more-than-32-bytes"


def username() -> str:
    return "u" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def database(postgres: PostgresServer) -> str:
    """One migrated database for the module; usernames are fresh per test."""
    url = postgres.create_database("acct" + uuid.uuid4().hex[:12])
    upgrade(url)
    return url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, for tests that flush it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


S = TypeVar("S", bound=AccountStore)


async def opened(store: S) -> S:
    await store.open()
    return store


@pytest.fixture(params=["sqlite", "redis", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path, redis_server: RedisServer) -> AsyncIterator[AccountStore]:
    s: AccountStore
    if request.param == "sqlite":
        s = SqliteAccounts(str(tmp_path / "chat.db"))
    elif request.param == "redis":
        s = RedisAccounts(redis_server.url)
    else:
        s = PostgresAccounts(redis_server.url, request.getfixturevalue("database"))
    await s.open()
    yield s
    await s.close()


async def db_rows(database_url: str, name: str) -> list[tuple]:
    engine = create_async_engine(driver_url(database_url))
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(select(accounts).where(accounts.c.username == name))]
    finally:
        await engine.dispose()


# --- the contract -----------------------------------------------------------------


async def test_an_account_is_found_by_username_and_by_id(store: AccountStore) -> None:
    name = username()
    made = await store.create(name, "Ada Lovelace", "$argon2id$hash")
    assert made.id.startswith("u_") and made.username == name and made.name == "Ada Lovelace"
    assert made.password_hash == "$argon2id$hash" and made.created_at > 1_700_000_000_000
    assert await store.by_username(name) == made
    assert await store.by_id(made.id) == made
    assert await store.by_username(username()) is None
    assert await store.by_id("u_" + uuid.uuid4().hex[:16]) is None


async def test_a_username_is_taken_once(store: AccountStore) -> None:
    name = username()
    first = await store.create(name, "first", "h1")
    with pytest.raises(UsernameTaken):
        await store.create(name, "second", "h2")
    assert await store.by_username(name) == first


async def test_of_concurrent_sign_ups_for_one_username_exactly_one_wins(store: AccountStore) -> None:
    name = username()
    results = await asyncio.gather(*(store.create(name, f"n{i}", "h") for i in range(8)), return_exceptions=True)
    won = [r for r in results if isinstance(r, Account)]
    assert len(won) == 1 and all(isinstance(r, UsernameTaken) for r in results if r not in won), results
    assert await store.by_username(name) == won[0]


async def test_a_session_lives_until_it_ends(store: AccountStore) -> None:
    account = await store.create(username(), "s", "h")
    one, two = await store.start_session(account.id, 3600), await store.start_session(account.id, 3600)
    assert one != two
    assert await store.session_account(one) == account.id == await store.session_account(two)
    await store.end_session(one)
    assert await store.session_account(one) is None
    assert await store.session_account(two) == account.id
    await store.end_session(one)  # ending it again is harmless
    assert await store.session_account("no-such-session") is None


async def test_a_session_expires_after_its_ttl(store: AccountStore) -> None:
    account = await store.create(username(), "s", "h")
    session = await store.start_session(account.id, 1)
    assert await store.session_account(session) == account.id

    async def expired() -> bool:
        return await store.session_account(session) is None

    await async_wait_for(expired, timeout=10, interval=0.1, what="the session to expire")


async def test_failed_logins_are_counted_per_key_within_a_window(store: AccountStore) -> None:
    key, other = "user:" + username(), "ip:" + uuid.uuid4().hex
    assert await store.failures(key) == (0, 0.0)
    assert [await store.count_failure(key, 60) for _ in range(3)] == [1, 2, 3]
    count, left = await store.failures(key)
    assert count == 3 and 0 < left <= 60
    assert await store.failures(other) == (0, 0.0)


# --- what the database keeps ------------------------------------------------------


def test_build_accounts_picks_the_database_when_a_fleet_has_one(tmp_path, redis_server, database) -> None:
    def build(**kwargs: str | None) -> AccountStore:
        return build_accounts(Settings(db_path=str(tmp_path / "chat.db"), **kwargs))  # type: ignore[arg-type]

    assert type(build(redis_url=redis_server.url, database_url=database)) is PostgresAccounts
    assert type(build(redis_url=redis_server.url, database_url=None)) is RedisAccounts
    assert type(build(redis_url=None, database_url=None)) is SqliteAccounts


async def test_accounts_outlive_redis_losing_its_data_but_sessions_do_not(private_redis, database) -> None:
    store = await opened(PostgresAccounts(private_redis.url, database))
    try:
        name = username()
        made = await store.create(name, "kept", "h")
        session = await store.start_session(made.id, 3600)
        private_redis.command("FLUSHALL")
        assert await store.by_username(name) == made and await store.by_id(made.id) == made
        assert await store.session_account(session) is None  # users sign in again
        with pytest.raises(UsernameTaken):
            await store.create(name, "impostor", "h2")
    finally:
        await store.close()


async def test_a_legacy_redis_account_is_found_and_copied_into_the_database(redis_server, database) -> None:
    legacy_store = await opened(RedisAccounts(redis_server.url))
    store = await opened(PostgresAccounts(redis_server.url, database))
    try:
        by_name = await legacy_store.create(username(), "by name", "h1")
        by_id = await legacy_store.create(username(), "by id", "h2")
        assert await db_rows(database, by_name.username) == []
        with pytest.raises(UsernameTaken):  # taken even before its first use copies it
            await store.create(by_name.username, "impostor", "h")
        assert await store.by_username(by_name.username) == by_name
        assert await store.by_id(by_id.id) == by_id
        for account in (by_name, by_id):
            assert await db_rows(database, account.username) == [
                (account.id, account.username, account.name, account.password_hash, account.created_at)
            ]
        # From now on the database answers, whatever becomes of the Redis record.
        assert legacy_store.redis is not None
        await legacy_store.redis.delete(f"fc:username:{by_name.username}", f"fc:account:{by_name.id}")
        assert await store.by_username(by_name.username) == by_name
    finally:
        await store.close()
        await legacy_store.close()


async def test_the_database_wins_over_a_conflicting_legacy_record(redis_server, database) -> None:
    legacy_store = await opened(RedisAccounts(redis_server.url))
    store = await opened(PostgresAccounts(redis_server.url, database))
    try:
        name = username()
        owner = await store.create(name, "owner", "h1")
        # A Redis-only record for the same name (a fleet mixing old and new instances).
        assert legacy_store.redis is not None
        await legacy_store.redis.delete(f"fc:username:{name}")
        stale = await legacy_store.create(name, "stale", "h2")
        assert await store.by_username(name) == owner
        assert await store.by_id(stale.id) is None
        assert await db_rows(database, name) == [(owner.id, name, "owner", "h1", owner.created_at)]
    finally:
        await store.close()
        await legacy_store.close()


async def test_an_unreachable_database_is_store_unavailable(redis_server, postgres) -> None:
    store = await opened(PostgresAccounts(redis_server.url, postgres.url.rsplit("/", 1)[0] + "/no_such_database"))
    try:
        with pytest.raises(StoreUnavailable):
            await store.by_username(username())
        with pytest.raises(StoreUnavailable):
            await store.create(username(), "n", "h")
    finally:
        await store.close()


def test_an_operator_creates_an_account_in_the_database_from_the_shell(redis_server, database) -> None:
    def create(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backend.accounts", "create", name, "--name", "The Operator", "--password-stdin"],
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": redis_server.url, "DATABASE_URL": database},
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

    name = username()
    made = create(name.upper())
    assert made.returncode == 0, made.stderr
    assert f"created {name}" in made.stdout
    again = create(name)
    assert again.returncode == 1 and "taken" in again.stderr
    rows = asyncio.run(db_rows(database, name))
    assert len(rows) == 1 and rows[0][2] == "The Operator" and rows[0][3].startswith("$argon2id$")


def test_an_operator_copies_every_legacy_account_at_once(private_redis, postgres) -> None:
    database = postgres.create_database("copy" + uuid.uuid4().hex[:12])
    upgrade(database)

    def copy(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backend.accounts", "copy-accounts"],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")} | env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def make_legacy() -> list[Account]:
        legacy = await opened(RedisAccounts(private_redis.url))
        try:
            return [await legacy.create(username(), f"legacy {i}", f"h{i}") for i in range(3)]
        finally:
            await legacy.close()

    made = asyncio.run(make_legacy())
    refused = copy(REDIS_URL=private_redis.url)
    assert refused.returncode == 2 and "DATABASE_URL" in refused.stderr
    for expected in (3, 0):  # a second run finds nothing new
        done = copy(REDIS_URL=private_redis.url, DATABASE_URL=database)
        assert done.returncode == 0, done.stderr
        assert f"copied {expected} accounts" in done.stdout
    private_redis.command("FLUSHALL")

    async def all_kept() -> list[Account | None]:
        store = await opened(PostgresAccounts(private_redis.url, database))
        try:
            return [await store.by_username(a.username) for a in made]
        finally:
            await store.close()

    assert asyncio.run(all_kept()) == made


@pytest.mark.fleet
def test_after_redis_loses_its_data_a_user_signs_in_again_and_keeps_the_username(private_redis, database) -> None:
    env = {
        "REDIS_URL": private_redis.url,
        "DATABASE_URL": database,
        "CHAT_GUESTS": "true",
        "CHAT_AUTH_SECRET": SECRET,  # tokens are signed alike before and after the flush
    }
    backend = Backend(env=env).start()
    try:
        url, name = backend.url, username()
        status, _, body = request(f"{url}/api/auth/signup", "POST", {"username": name, "password": PASSWORD})
        assert status == 201, body
        old_token = body["token"]

        private_redis.command("FLUSHALL")

        status, _, me = request(f"{url}/api/me", headers={"Authorization": f"Bearer {old_token}"})
        assert status == 401, me  # the session went with Redis
        status, _, body = request(f"{url}/api/auth/login", "POST", {"username": name, "password": PASSWORD})
        assert status == 200, body
        assert body["user"]["username"] == name
        status, _, me = request(f"{url}/api/me", headers={"Authorization": f"Bearer {body['token']}"})
        assert status == 200 and me["user"]["username"] == name

        refusal = asyncio.run(try_connect(url, {"name": name}))
        assert isinstance(refusal, dict) and refusal["data"]["error"] == "name_taken", refusal
        status, _, body = request(f"{url}/api/rooms/general/messages", "POST", {"name": name, "text": "impostor"})
        assert (status, body["error"]) == (409, "name_taken")
        status, _, body = request(f"{url}/api/auth/signup", "POST", {"username": name, "password": PASSWORD + "!"})
        assert (status, body["error"]) == (409, "username_taken")
    finally:
        backend.kill()
