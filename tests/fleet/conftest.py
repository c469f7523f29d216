"""Fleet fixtures: several real hypercorn instances over one real Redis.

Every fleet test runs twice, over the session's standalone redis-server and over its
3-master Redis Cluster (``fleet_redis``, ids ``[standalone]`` and ``[cluster]``); the
``fleet(...)`` and ``workers(...)`` fixtures start their processes on it unless told
``redis=`` another. ``@pytest.mark.redis_modes("standalone")`` (with the reason in the
test's docstring) runs a test in one mode only: a fault whose cluster form is tested in
test_cluster.py, whose tests are ``redis_modes("cluster")``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.support import ROOT, Backend, RedisCluster, RedisServer, subscriber_count

FLEET_ENV = {
    "CHAT_RATE": "1000",
    "CHAT_RATE_BURST": "1000",
    "CHAT_PRESENCE_TTL_SECONDS": "3",
}

REDIS_MODES = ("standalone", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_modes(*modes): the fleet_redis modes a fleet test runs in (default: standalone, cluster)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses ``fleet_redis`` (through ``fleet``/``workers`` or itself) runs once per mode."""
    if "fleet_redis" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("redis_modes")
    modes = list(marker.args) if marker else list(REDIS_MODES)
    assert set(modes) <= set(REDIS_MODES), modes
    metafunc.parametrize("fleet_redis", modes, indirect=True, ids=modes)


class FleetRedis:
    """The Redis of one fleet test: the session's standalone server or its cluster,
    emptied before the test, with what a test asks of either in the same words."""

    def __init__(self, mode: str, server: RedisServer | RedisCluster) -> None:
        self.mode = mode
        self.server = server

    @property
    def cluster(self) -> RedisCluster | None:
        return self.server if isinstance(self.server, RedisCluster) else None

    @property
    def url(self) -> str:
        return self.server.url

    def room(self, prefix: str = "f", master: int = 0) -> str:
        """A fresh room name; over the cluster its slot lives on master ``master``."""
        if self.cluster is not None:
            return self.cluster.room_on(master % self.cluster.masters_wanted, prefix)
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def rooms(self, n: int, prefix: str = "f") -> list[str]:
        """``n`` fresh rooms; over the cluster room ``i`` lives on master ``i % 3``, so
        three or more rooms span every master."""
        return [self.room(prefix, i) for i in range(n)]

    def masters(self) -> list[RedisServer]:
        """The nodes that hold data: the server itself, or every master of the cluster."""
        return self.cluster.masters() if self.cluster is not None else [self.server]  # type: ignore[list-item]

    def holder_of(self, key: str) -> RedisServer:
        """The node that serves ``key``."""
        return self.cluster.master_of(key) if self.cluster is not None else self.server  # type: ignore[return-value]

    def subscribers(self, room: str) -> int:
        """Instances subscribed to the room's channel, as Redis counts them: PUBSUB NUMSUB,
        or over the cluster PUBSUB SHARDNUMSUB on the master of the room's slot."""
        channel = "fleetchat:{" + room + "}"
        return subscriber_count(self.holder_of(channel), channel, sharded=self.cluster is not None)

    def kill_pubsub_links(self) -> None:
        """Close every pub/sub connection (classic and sharded) on every master."""
        for node in self.masters():
            node.command("CLIENT", "KILL", "TYPE", "pubsub")

    def flush(self) -> None:
        """Empty it (every master of the cluster)."""
        if self.cluster is not None:
            self.cluster.flush()
        else:
            self.server.command("FLUSHALL")  # type: ignore[union-attr]


@pytest.fixture
def fleet_redis(request: pytest.FixtureRequest) -> FleetRedis:
    """The session's redis-server or 3-master cluster (by the test's parameter), flushed
    first so no test meets another's keys (consumer groups, buckets, presence)."""
    mode = request.param
    server = request.getfixturevalue("redis_cluster" if mode == "cluster" else "redis_server")
    redis = FleetRedis(mode, server)
    redis.flush()
    return redis


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of the test's own, for tests that kill or restart it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fleet(backends, fleet_redis: FleetRedis) -> Callable[..., list[Backend]]:
    """``fleet(n)`` starts n instances on the test's ``fleet_redis`` (or ``redis=`` another)."""

    def start(n: int = 2, redis: RedisServer | RedisCluster | None = None, **env: str) -> list[Backend]:
        url = (redis or fleet_redis).url
        return [backends(env={**FLEET_ENV, "REDIS_URL": url, **env}) for _ in range(n)]

    return start


@pytest.fixture
def workers(fleet_redis: FleetRedis) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``workers(name)`` starts ``python -m backend.worker`` on the test's ``fleet_redis`` (or ``redis=``)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        name: str = "w1", redis: RedisServer | RedisCluster | None = None, **extra: str
    ) -> subprocess.Popen[bytes]:
        env = {**os.environ, "REDIS_URL": (redis or fleet_redis).url, "CHAT_WORKER_NAME": name, **extra}
        proc = subprocess.Popen([sys.executable, "-m", "backend.worker"], cwd=ROOT, env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
