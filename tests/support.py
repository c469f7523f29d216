"""Real processes for tests: redis-server, PostgreSQL and hypercorn on free
ports, and Socket.IO clients that record what they receive.

The one home of the test harness's launchers and helpers: ``Backend`` (the
Procfile's hypercorn command, from ``deploy.fleet.backend_argv``), ``RedisServer``
(``deploy.fleet.redis_argv``), ``PostgresServer``, ``free_port`` (``deploy.fleet``'s)
and ``metric`` (the Prometheus text parser)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import socketio
from prometheus_client.parser import text_string_to_metric_families

from deploy.fleet import (
    backend_argv,
    cluster_args,
    cluster_create_argv,
    cluster_formed,
    free_port,
    postgres_account,
    postgres_bindir,
    redis_argv,
)

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["ROOT", "Backend", "ChatClient", "LocalFleet", "RedisServer", "free_port", "metric", "scrape"]


def _sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` with exactly ``labels`` in a Prometheus
    text exposition (prometheus_client's parser), or 0 when it has no such sample."""
    value = _sample(text, name, labels)
    return 0.0 if value is None else value


def scrape(url: str, name: str, **labels: str) -> float:
    """``metric`` of the backend at ``url`` (its ``/metrics``); an AssertionError when the sample is missing."""
    status, body = http_get(url + "/metrics", 5)
    assert status == 200, f"/metrics answered {status}"
    value = _sample(body.decode(), name, labels)
    assert value is not None, f"{name}{labels or ''} missing from /metrics"
    return value


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


async def async_wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``predicate`` (sync, or returning an awaitable) until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def rooms_listed(url: str) -> list[dict[str, Any]]:
    """``GET /api/rooms`` of a backend: the rooms with their member counts."""
    return json.loads(http_get(url + "/api/rooms")[1])["rooms"]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class RedisServer:
    """A private redis-server with AOF fsync on every write, so a restart
    loses nothing that was acknowledged (the production setting we document)."""

    def __init__(self, extra_args: list[str] | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fc-redis-")
        self.extra_args = extra_args or []
        """More redis-server flags (a cluster node's)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: run scripts/bootstrap.sh apt:redis-server")
        self.proc = subprocess.Popen(
            [*redis_argv(exe, self.port, self.dir), *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 10, what="redis-server to answer")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        """SIGTERM: Redis flushes its AOF and exits cleanly."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def wipe(self) -> None:
        """Kill it and lose its files: it comes back empty, like a Redis that keeps nothing on disk."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> bytes:
        """One raw RESP command (no client library needed for admin calls)."""
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"".join(parts))
            return s.recv(65536)


def subscriber_count(node: RedisServer, channel: str, sharded: bool = False) -> int:
    """``channel``'s subscribers on ``node``: PUBSUB SHARDNUMSUB (sharded) or NUMSUB (classic)."""
    reply = node.command("PUBSUB", "SHARDNUMSUB" if sharded else "NUMSUB", channel)
    return int(reply.split(b"\r\n")[-2][1:])


def _bulk(reply: bytes) -> str:
    """The text of a RESP bulk-string reply (``$<len>\\r\\n<text>\\r\\n``)."""
    if not reply.startswith(b"$"):
        raise RuntimeError(f"not a bulk reply: {reply[:200]!r}")
    header, _, rest = reply.partition(b"\r\n")
    return rest[: int(header[1:])].decode()


class RedisCluster:
    """A private Redis Cluster: ``masters`` masters (each with ``replicas`` replicas) from
    Debian's ``redis-server`` on free ports, each node with its own temp dir and the same
    AOF settings as ``RedisServer``, joined by ``redis-cli --cluster create``.

    Its ``url`` names one node, as a deployment's ``REDIS_URL`` would: clients find the
    others from it. ``kill``/``stop_node``/``restart`` fault one node; a restarted node
    comes back with its nodes.conf and AOF, so it rejoins with its data."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.masters_wanted = masters
        self.replicas = replicas
        # The cluster bus defaults to port + 10000, which may be taken or past 65535: each
        # node gets a free port of its own for it.
        self.nodes = [
            RedisServer(extra_args=cluster_args(free_port(), node_timeout_ms=2000))
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed: run scripts/bootstrap.sh apt:redis-server")
        argv = cluster_create_argv(cli, (n.port for n in self.nodes), self.replicas)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        self.wait_ok()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says ``cluster_state:ok`` and knows every other node, and
        every replica has synced with its master: a replica that never did is never
        promoted (its data counts as too old), so a master killed before then stays failed."""
        wait_for(lambda: all(self._ok(n) for n in self.nodes if n.alive), timeout, what="cluster_state:ok")

    def _ok(self, node: RedisServer) -> bool:
        try:
            info = _bulk(node.command("CLUSTER", "INFO"))
            replication = _bulk(node.command("INFO", "replication"))
        except (OSError, RuntimeError):
            return False
        synced = "role:slave" not in replication or "master_link_status:up" in replication
        return cluster_formed(info, len(self.nodes)) and synced

    def cluster_nodes(self) -> list[dict[str, Any]]:
        """``CLUSTER NODES`` as seen by a live node: id, port, flags, master id, slot ranges."""
        node = next(n for n in self.nodes if n.alive)
        rows = []
        for line in _bulk(node.command("CLUSTER", "NODES")).splitlines():
            fields = line.split()
            slots = []
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                first, _, last = part.partition("-")
                slots.append((int(first), int(last or first)))
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            rows.append({"id": fields[0], "port": port, "flags": fields[2].split(","), "master": fields[3]})
            rows[-1]["slots"] = slots
        return rows

    def masters(self) -> list[RedisServer]:
        """The nodes serving slots now, in slot order (the first serves slot 0)."""
        rows = [r for r in self.cluster_nodes() if "master" in r["flags"] and r["slots"]]
        rows.sort(key=lambda r: r["slots"][0][0])
        by_port = {n.port: n for n in self.nodes}
        return [by_port[r["port"]] for r in rows]

    def master_of(self, key: str) -> RedisServer:
        """The node that serves ``key``'s hash slot now."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        by_port = {n.port: n for n in self.nodes}
        for row in self.cluster_nodes():
            if "master" in row["flags"] and any(a <= slot <= b for a, b in row["slots"]):
                return by_port[row["port"]]
        raise RuntimeError(f"no master serves slot {slot}")

    def room_on(self, index: int, prefix: str = "room") -> str:
        """A fresh room name whose slot (its ``{room}`` hash tag) lives on master ``index``."""
        target = self.masters()[index]
        while True:
            name = f"{prefix}-{uuid.uuid4().hex[:8]}"
            if self.master_of("{" + name + "}").port == target.port:
                return name

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for node in self.masters():
            node.command("FLUSHALL")

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (its files stay, for ``restart``)."""
        node.kill()

    def stop_node(self, node: RedisServer) -> None:
        """SIGTERM one node: it writes its AOF and nodes.conf and exits."""
        node.terminate()

    def restart(self, node: RedisServer, wait: bool = True) -> None:
        """Start a killed or stopped node again on its port with its files; it rejoins."""
        node.start()
        if wait:
            self.wait_ok()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class PostgresServer:
    """A private PostgreSQL cluster in a temp dir, on a free port of 127.0.0.1
    with trust auth and its unix socket in that dir, so it never meets the
    machine's own server. As root (CI) it runs as the ``postgres`` user (or
    ``nobody``), since PostgreSQL refuses to run as root."""

    def __init__(self, dbname: str = "fleetchat", durable: bool = False) -> None:
        self.port = free_port()
        self.dbname = dbname
        self.durable = durable
        """False (tests): fsync and synchronous commit off; benchmarks keep PostgreSQL's defaults."""
        self.dir = tempfile.mkdtemp(prefix="fc-pg-")
        self.data = os.path.join(self.dir, "data")
        self.bindir = postgres_bindir()
        self.user = "postgres"
        self._run_as: int | None = None
        account = postgres_account()
        if account is not None:
            self._run_as, self._gid = account
            os.chown(self.dir, *account)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as, "group": self._gid, "extra_groups": []}
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True, cwd=self.dir, **kwargs
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        """Create the cluster on the first call; start (or restart, after ``kill``) it."""
        if not os.path.exists(self.data):
            self._run("initdb", "-D", self.data, "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
            created = False
        else:
            created = True
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=100"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", options, "-w", "start")
        if not created:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.dbname)

    def kill(self) -> None:
        """Stop the server at once (like a crash), keeping its data for ``start``."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        """Another empty database in this cluster; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Backend:
    """One backend process on a free port, started as the Procfile starts it
    (``deploy.fleet.backend_argv``: hypercorn with ``deploy/hypercorn.toml``,
    ``--workers 0`` so SIGKILL really kills the instance, uvloop).

    ``name`` names its database and log files in ``db_dir``; ``own_session``
    makes it lead its own process group, which ``kill`` then kills whole."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        port: int | None = None,
        db_dir: str | None = None,
        graceful_timeout: float = 3,
        name: str | None = None,
        own_session: bool = False,
    ) -> None:
        self.graceful_timeout = graceful_timeout
        self.port = port or free_port()
        self.db_dir = db_dir or tempfile.mkdtemp(prefix="fc-db-")
        self.own_session = own_session
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "CHAT_DB_PATH": os.path.join(self.db_dir, f"{name or 'chat'}.db"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.db_dir, f"{name}.log" if name else f"backend-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return backend_argv(f"127.0.0.1:{self.port}", "--graceful-timeout", str(self.graceful_timeout))

    def start(self) -> Backend:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        wait_for(self._healthy, 30, what=f"backend on {self.port} (log: {self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"backend exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return http_get(self.url + "/healthz", 0.5)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def terminate(self, timeout: float = 15) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            if self.own_session:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait()

    def restart(self) -> Backend:
        self.terminate()
        return self.start()


class ChatClient:
    """A python-socketio client that records every event it receives."""

    def __init__(self, url: str, name: str, **auth: Any) -> None:
        self.url = url
        self.name = name
        self.auth = {"name": name, **auth}
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[Any]] = defaultdict(list)
        self.sio.on("*", self._record)

    async def _record(self, event: str, data: Any = None) -> None:
        self.events[event].append(data)

    async def connect(self, transports: list[str] | None = None) -> ChatClient:
        await self.sio.connect(self.url, auth=self.auth, transports=transports or ["websocket"], wait_timeout=10)
        return self

    async def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def join(self, room: str, **extra: Any) -> dict[str, Any]:
        ack = await self.call("join", {"room": room, **extra})
        assert ack["ok"], ack
        return ack

    async def send(self, room: str, text: str, client_id: str | None = None) -> dict[str, Any]:
        return await self.call("message", {"room": room, "text": text, "client_id": client_id or uuid.uuid4().hex})

    def messages(self, room: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.events["message"] if room is None or m["room"] == room]

    def texts(self, room: str | None = None) -> list[str]:
        return [m["text"] for m in self.messages(room)]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


MODERATOR = "mod" + uuid.uuid4().hex[:8]
"""A username that moderates the backends of the ``urls`` fixture (CHAT_MODERATORS)."""

FLEET_ENV = {
    "CHAT_RATE": "1000",
    "CHAT_RATE_BURST": "1000",
    "CHAT_PRESENCE_TTL_SECONDS": "3",
    "CHAT_LOG_FORMAT": "json",
    "CHAT_GUESTS": "true",  # the fleet tests' clients connect as guests
}


class LocalFleet:
    """``python -m deploy.fleet`` as a subprocess, and what its state file says.

    Without UI processes it runs no Reflex UI (``--no-ui``); with them, each one
    builds the app first, so allow minutes."""

    def __init__(self, ui_processes: int = 0, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fc-fleet-"))
        self.ui_processes = ui_processes
        self.env = env or {}
        self.output = self.dir / "supervisor.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalFleet:
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            raise RuntimeError("nginx is not installed: run scripts/bootstrap.sh apt:nginx")
        env = {**os.environ, **FLEET_ENV, **self.env}
        env.pop("REDIS_URL", None)
        argv = [sys.executable, "-m", "deploy.fleet", "--state-dir", str(self.dir)]
        argv += ["--lb-port", "0", "--redis-port", "0", "--web-port", "0", "--postgres-port", "0"]
        if self.ui_processes:
            argv += ["--ui-processes", str(self.ui_processes), "--ui-port", "0", "--no-worker"]
        else:
            argv += ["--no-ui"]
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        timeout = 90 + 300 * self.ui_processes
        wait_for(self._ready, timeout, interval=0.2, what="the fleet to be ready")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"deploy.fleet exited with {self.proc.returncode}:\n{self.tail()}")
        state = self.state()
        return bool(state and state["ready"])

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "fleet.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def tail(self, size: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.output.read_bytes()[-size:].decode(errors="replace")
        return ""

    @property
    def lb_url(self) -> str:
        return self.state()["lb_url"]

    def web(self) -> dict[str, dict[str, Any]]:
        return {n: p for n, p in self.state()["processes"].items() if n.startswith("web.")}

    def ui(self) -> dict[str, dict[str, Any]]:
        return {n: p for n, p in self.state()["processes"].items() if n.startswith("ui.")}

    def all_web_ready(self) -> bool:
        return all(p["pid"] is not None and p["ready"] for p in self.web().values())

    def connected(self, port: int) -> float:
        """``fleetchat_connected_sockets`` of one instance."""
        return scrape(f"http://127.0.0.1:{port}", "fleetchat_connected_sockets")

    def stop(self) -> None:
        """Ctrl-C, as a user would; then make sure nothing it started survives."""
        pids = [p["pid"] for p in self.state().get("processes", {}).values() if p.get("pid")]
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def new_account(url: str, username: str | None = None, password: str = "correct horse battery") -> dict[str, Any]:
    """Sign up a fresh account on a backend: ``{"user", "token"}`` of the sign-up answer."""
    name = username or "u" + uuid.uuid4().hex[:10]
    body = json.dumps({"username": name, "password": password}).encode()
    req = urllib.request.Request(
        url + "/api/auth/signup", data=body, method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())
