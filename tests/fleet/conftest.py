"""Fleet fixtures: several real hypercorn instances over one real redis-server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.support import ROOT, Backend, RedisServer

FLEET_ENV = {
    "CHAT_RATE": "1000",
    "CHAT_RATE_BURST": "1000",
    "CHAT_PRESENCE_TTL_SECONDS": "3",
}


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, for tests that kill or restart it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fleet(backends, redis_server) -> Callable[..., list[Backend]]:
    """``fleet(n)`` starts n instances on the session's Redis (or ``redis=`` another)."""

    def start(n: int = 2, redis: RedisServer | None = None, **env: str) -> list[Backend]:
        url = (redis or redis_server).url
        return [backends(env={**FLEET_ENV, "REDIS_URL": url, **env}) for _ in range(n)]

    return start


@pytest.fixture
def workers(redis_server) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str = "w1", redis: RedisServer | None = None, **extra: str) -> subprocess.Popen[bytes]:
        import os

        env = {**os.environ, "REDIS_URL": (redis or redis_server).url, "CHAT_WORKER_NAME": name, **extra}
        proc = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
