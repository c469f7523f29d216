"""Shared fixtures: a private redis-server and PostgreSQL per test session, backends on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from tests.support import FLEET_ENV, MODERATOR, Backend, ChatClient, PostgresServer, RedisCluster, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-master Redis Cluster (``tests.support.RedisCluster``), started on first use."""
    cluster = RedisCluster(masters=3)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL (initdb + pg_ctl on a free port), never the machine's own."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def backends() -> Iterator[Callable[..., Backend]]:
    """Start backends on demand; every one is stopped at the end of the test."""
    started: list[Backend] = []

    def start(**kwargs: object) -> Backend:
        backend = Backend(**kwargs).start()  # type: ignore[arg-type]
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.kill()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets ``ACCEL_MODES = ("on", "off")`` runs its ``embedded`` tests
    against a backend with the fast path (backend/accel/) and one with ``CHAT_ACCEL=off``."""
    modes = getattr(metafunc.module, "ACCEL_MODES", None)
    if modes and "embedded" in metafunc.fixturenames:
        metafunc.parametrize("embedded", modes, indirect=True, ids=[f"accel-{m}" for m in modes], scope="module")


@pytest.fixture(scope="module")
def embedded(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """One embedded-mode backend shared by a test module (rooms keep tests apart)."""
    env = {"CHAT_RATE": "1000", "CHAT_RATE_BURST": "1000", "CHAT_ACCEL": getattr(request, "param", "on")}
    backend = Backend(env=env).start()
    yield backend
    backend.kill()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., ChatClient]]:
    made: list[ChatClient] = []

    async def make(url: str, name: str, **auth: object) -> ChatClient:
        client = ChatClient(url, name, **auth)
        await client.connect()
        made.append(client)
        return client

    yield make  # type: ignore[misc]
    for client in made:
        await client.close()


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def urls(request, redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    """Two places to connect, for tests that must hold in both modes: the same embedded
    backend twice, or two instances of a fleet (``MODERATOR`` moderates in both)."""
    env = {**FLEET_ENV, "CHAT_MODERATORS": MODERATOR}
    if request.param == "embedded":
        started = [Backend(env=env).start()]
    else:
        started = [Backend(env={**env, "REDIS_URL": redis_server.url}).start() for _ in range(2)]
    yield started[0].url, started[-1].url
    for backend in started:
        backend.kill()
