"""A local production-like fleet, supervised: ``python -m deploy.fleet`` (``make fleet``).

Starts Redis (its own port, AOF), Debian's PostgreSQL as the system of record
(its own cluster under the state dir, migrated as the Procfile's release
phase does), N ``hypercorn backend.app:asgi`` instances, the worker (mentions
and the archiver), the UI tier, and Debian's nginx in front of both tiers
(``deploy/nginx.conf.template``), all on one origin:

- ``/socket.io/``, ``/api/``, ``/ws`` and the probes go to the web instances;
- everything else, the page, goes round robin to M UI processes, which serve
  the one build of it (``reflex export`` once at start; ``frontend/serve.py``),
  so every tab gets the same assets whichever process it meets.

The page's chat engine connects back to that same origin, so a browser talks
to the web fleet itself, and a UI process only serves files.
Every child's output is printed with its name in front and kept in
``<state-dir>/logs/<name>.log``.

The supervisor restarts any process that exits (the way a PaaS restarts a
dyno), so a rolling restart is just SIGTERM to one instance at a time
(``deploy/rolling_restart.py``). It also polls every instance's ``/readyz``
and marks an instance that is not ready ``down`` in nginx (then reloads it),
on top of nginx's passive checks. The state of the fleet (ports, pids,
readiness) is kept in ``<state-dir>/fleet.json`` for scripts and tests.
Ctrl-C (SIGINT) or SIGTERM stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.ui_venv import ui_env, ui_python

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
HYPERCORN_CONFIG = Path(__file__).resolve().parent / "hypercorn.toml"
# What `reflex run` needs of the project.
UI_FILES = ["rxconfig.py", "frontend", "assets", "reflex.lock"]
# The UI tier's nginx parts (see deploy/nginx.conf.template).


def copy_app(dest: Path, source: Path = ROOT) -> Path:
    """A copy of the Reflex app's files in ``dest``: a Reflex build writes into its
    project folder, so each build gets a folder of its own (build output is not copied)."""
    dest.mkdir(parents=True)
    for item in UI_FILES:
        path = source / item
        if path.is_dir():
            shutil.copytree(path, dest / item, ignore=shutil.ignore_patterns("__pycache__", ".web", ".states"))
        else:
            shutil.copy2(path, dest / item)
    return dest


UI_UPSTREAM = """    upstream fleetchat_ui {
        # The UI processes: each serves the one build of the page, so any may serve any tab.
{{ui_servers}}
        keepalive 16;
    }
"""
UI_LOCATIONS = """        # The page and its assets, round robin over the UI processes.
        location / {
            proxy_pass http://fleetchat_ui;
            proxy_read_timeout 15s;
        }
"""
UI_ABSENT_LOCATION = """        location / {
            proxy_pass http://fleetchat;
        }
"""

RESTART_DELAY = 0.5
CRASH_LOOP_SECONDS = 3.0  # an exit this soon after a start counts towards a crash loop
CRASH_LOOP_LIMIT = 5
READY_POLL = 1.0
STOP_GRACE = 10.0


def find_executable(name: str) -> str | None:
    """On PATH, or in the sbin folders a non-root PATH often lacks (Debian's nginx)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now: the one copy (tests, bench and this module use it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_argv(bind: str, *extra: str) -> list[str]:
    """The Procfile's ``web`` command: ``hypercorn --config deploy/hypercorn.toml
    backend.app:asgi --bind ... --workers 0 --worker-class uvloop`` (flags in
    ``extra`` come after, so they win), as the fleet, the tests and ``make run``
    start the backend."""
    argv = [sys.executable, "-m", "hypercorn", "--config", str(HYPERCORN_CONFIG), "backend.app:asgi"]
    return [*argv, "--bind", bind, "--workers", "0", "--worker-class", "uvloop", *extra]


def redis_argv(exe: str, port: int, data_dir: str | Path) -> list[str]:
    """redis-server on 127.0.0.1 with AOF and fsync on every write: an
    acknowledged message survives a Redis restart (the production setting)."""
    argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    return [*argv, "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--loglevel", "warning"]


def postgres_bindir() -> Path:
    """Where the installed PostgreSQL's server programs are: on PATH, else
    ``pg_config --bindir``, else Debian's versioned directory (newest)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (bindir / "pg_ctl").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError("PostgreSQL is not installed: run scripts/bootstrap.sh apt:postgresql")


def postgres_account() -> tuple[int, int] | None:
    """The (uid, gid) PostgreSQL's programs must run as: PostgreSQL refuses to run as
    root, so as root (CI, containers) it runs as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def check_port_free(port: int, what: str) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(
                f"port {port} for {what} is taken (is another fleet or `make run` running?). "
                f"Stop it, or choose other ports: scripts/fleet.sh --help"
            ) from None


async def _get(
    port: int, path: str, timeout: float, read: Callable[[asyncio.StreamReader], Awaitable[bytes]]
) -> bytes | None:
    """``GET path`` on 127.0.0.1:port over HTTP/1.0; what ``read`` takes of the
    response, or None if nothing answers in time."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return await asyncio.wait_for(read(reader), timeout)
    except (TimeoutError, OSError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status code of ``GET path`` on 127.0.0.1:port, or None if nothing answers."""
    line = await _get(port, path, timeout, lambda reader: reader.readline())
    parts = line.split() if line is not None else []
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def http_body(port: int, path: str, timeout: float = 1.0) -> bytes | None:
    """The stripped body of ``GET path`` on 127.0.0.1:port, or None."""
    response = await _get(port, path, timeout, lambda reader: reader.read())  # HTTP/1.0: read to the close
    return response.partition(b"\r\n\r\n")[2].strip() if response is not None else None


def cluster_args(bus_port: int, node_timeout_ms: int = 5000) -> list[str]:
    """redis-server flags of a cluster node: its nodes.conf beside its data (its ``--dir``), its
    cluster bus on ``bus_port`` (the default, port + 10000, may be taken or past 65535), a silent
    master counted as failed after ``node_timeout_ms``. The one copy: the fleet, the tests'
    ``RedisCluster`` and the bench (``--redis-cluster``) start their nodes with it."""
    argv = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    return [*argv, "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus_port)]


def cluster_create_argv(cli: str, ports: Iterable[int], replicas: int = 0) -> list[str]:
    """``redis-cli --cluster create`` joining the nodes on 127.0.0.1:``ports`` into one cluster
    (``replicas`` per master), without asking; shared like ``cluster_args``."""
    argv = [cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports)]
    return [*argv, "--cluster-replicas", str(replicas), "--cluster-yes"]


async def _redis_reply(port: int, command: bytes) -> bytes | None:
    """One raw RESP command to the Redis on ``port`` and the start of its reply; None if it does not answer."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (TimeoutError, OSError):
        return None
    try:
        writer.write(command)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 1.0)
    except (TimeoutError, OSError):
        return None
    finally:
        writer.close()


def cluster_formed(cluster_info: str, nodes: int | None = None) -> bool:
    """A node's ``CLUSTER INFO`` says the cluster serves every slot (and, given ``nodes``,
    that the node knows all of them). The one check the fleet, the bench and the tests wait on."""
    known = nodes is None or f"cluster_known_nodes:{nodes}" in cluster_info
    return "cluster_state:ok" in cluster_info and known


async def redis_cluster_ok(port: int) -> bool:
    """The node on ``port`` says the cluster is formed and serves every slot."""
    reply = await _redis_reply(port, b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")
    return reply is not None and cluster_formed(reply.decode(errors="replace"))


async def redis_answers(port: int) -> bool:
    reply = await _redis_reply(port, b"PING\r\n")
    return reply is not None and reply.startswith(b"+PONG")


async def wait_until(check: Any, timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(every)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Child:
    """One supervised process; restarted when it exits unless the fleet is stopping."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    restart: bool = True
    cwd: Path = ROOT
    account: tuple[int, int] | None = None
    """(uid, gid) to run as, for PostgreSQL when the fleet runs as root."""
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    ready: bool = False
    started_at: float = 0.0
    exits: list[int | None] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the children in order
            **({} if self.account is None else {"user": self.account[0], "group": self.account[1], "extra_groups": []}),
        )
        self.starts += 1
        self.started_at = time.monotonic()
        self.ready = False

    async def pump(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        prefix = f"{self.name:<9}| "
        with self.log_path.open("ab") as log:
            while line := await proc.stdout.readline():
                log.write(line)
                log.flush()
                sys.stdout.write(prefix + line.decode(errors="replace").rstrip("\n") + "\n")
                sys.stdout.flush()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@dataclass
class Ports:
    lb: int
    redis: int
    web: list[int]
    ui: list[int]
    postgres: int | None = None
    """None: no PostgreSQL, Redis alone keeps the history."""
    cluster: list[tuple[int, int]] = field(default_factory=list)
    """``--redis-cluster``: (port, cluster bus port) of each master; the first is ``redis``'s."""


class Fleet:
    def __init__(self, state_dir: Path, ports: Ports, *, worker: bool = True, ui: bool = True) -> None:
        self.state_dir = state_dir
        self.ports = ports
        self.with_worker = worker
        self.with_ui = ui
        self.nginx_dir = state_dir / "nginx"
        self.logs = state_dir / "logs"
        self.children: dict[str, Child] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()
        self.failed: str | None = None
        self.ready = False
        self.nginx_down: frozenset[int] = frozenset()
        self.reloads = 0
        self.generation = 0

    # -- paths and urls ---------------------------------------------------------

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.lb}"

    @property
    def redis_url(self) -> str:
        if self.ports.cluster:  # any node of the cluster: the backend finds the others (INFO cluster)
            return f"redis://127.0.0.1:{self.ports.redis}"
        return f"redis://127.0.0.1:{self.ports.redis}/0"

    @property
    def database_url(self) -> str | None:
        if self.ports.postgres is None:
            return None
        return f"postgresql://postgres@127.0.0.1:{self.ports.postgres}/fleetchat"

    @property
    def ui_url(self) -> str:
        """Where a person opens the chat: the load balancer, in front of the UI processes."""
        return f"http://localhost:{self.ports.lb}"

    @property
    def web(self) -> list[Child]:
        return [c for name, c in self.children.items() if name.startswith("web.")]

    # -- the processes --------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("CHAT_LOG_FORMAT", "json")
        env["PYTHONUNBUFFERED"] = "1"
        env["REDIS_URL"] = self.redis_url
        if self.database_url is not None:
            env["DATABASE_URL"] = self.database_url
        env.pop("PORT", None)
        return env

    def _redis(self) -> Child:
        exe = find_executable("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed: scripts/bootstrap.sh apt:redis-server")
        data = self.state_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = redis_argv(exe, self.ports.redis, data)
        return Child("redis", argv, dict(os.environ), self.logs / "redis.log", port=self.ports.redis)

    def _cluster_nodes(self) -> list[Child]:
        """``--redis-cluster``: one redis-server per master, each with its own dir and bus port."""
        exe = find_executable("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not installed: scripts/bootstrap.sh apt:redis-server")
        nodes = []
        for index, (port, bus) in enumerate(self.ports.cluster, start=1):
            data = self.state_dir / f"redis-cluster-{index}"
            data.mkdir(parents=True, exist_ok=True)
            argv = [*redis_argv(exe, port, data), *cluster_args(bus)]
            name = "redis" if index == 1 else f"redis.{index}"
            nodes.append(Child(name, argv, dict(os.environ), self.logs / f"{name}.log", port=port))
        return nodes

    async def _form_cluster(self) -> None:
        """Join the masters into one cluster the first time (their nodes.conf keeps it after)."""
        if await redis_cluster_ok(self.ports.redis):
            return
        cli = find_executable("redis-cli")
        if cli is None:
            raise SystemExit("redis-cli is not installed: scripts/bootstrap.sh apt:redis-server")
        proc = await asyncio.create_subprocess_exec(
            *cluster_create_argv(cli, (port for port, _ in self.ports.cluster)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"redis-cli --cluster create failed: {err.decode(errors='replace')[-500:]}")
        await wait_until(lambda: redis_cluster_ok(self.ports.redis), 30, "the Redis Cluster to say cluster_state:ok")

    def _postgres(self) -> Child:
        """Debian's PostgreSQL in a cluster of the fleet's own (created on the first start)."""
        assert self.ports.postgres is not None
        bindir = postgres_bindir()
        home = self.state_dir / "postgres"
        data = home / "data"
        account = postgres_account()
        home.mkdir(parents=True, exist_ok=True)
        if account is not None:
            os.chown(home, *account)
            # the postgres account must be able to pass through the state dir to its own
            os.chmod(self.state_dir, os.stat(self.state_dir).st_mode | 0o011)
        if not data.exists():
            initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            self._as_postgres(initdb, account)
        argv = [str(bindir / "postgres"), "-D", str(data), "-p", str(self.ports.postgres), "-k", str(home)]
        argv += ["-c", "listen_addresses=127.0.0.1"]
        child = Child("postgres", argv, dict(os.environ), self.logs / "postgres.log", port=self.ports.postgres)
        child.account = account
        return child

    @staticmethod
    def _as_postgres(argv: list[str], account: tuple[int, int] | None) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if account is not None:
            kwargs = {"user": account[0], "group": account[1], "extra_groups": []}
        return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)

    async def _prepare_database(self) -> None:
        """Create the database once, then migrate it (the Procfile's release phase)."""
        assert self.ports.postgres is not None
        createdb = [str(postgres_bindir() / "createdb"), "-h", "127.0.0.1", "-p", str(self.ports.postgres)]
        done = self._as_postgres([*createdb, "-U", "postgres", "fleetchat"], postgres_account())
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise SystemExit(f"createdb failed: {done.stderr.strip()}")
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backend.db.migrate", cwd=ROOT, env=self._base_env()
        )
        if await migrate.wait() != 0:
            raise SystemExit("the database migration (python -m backend.db.migrate) failed")

    def _web(self, index: int, port: int) -> Child:
        origins = [self.lb_url, f"http://localhost:{self.ports.lb}"]
        env = {
            **self._base_env(),
            "CHAT_CORS_ORIGINS": os.environ.get("CHAT_CORS_ORIGINS", ",".join(origins)),
            "CHAT_TRUSTED_PROXIES": os.environ.get("CHAT_TRUSTED_PROXIES", "127.0.0.1"),
            # Accounts only, as the Procfile has it; CHAT_GUESTS=true admits guests.
            "CHAT_GUESTS": os.environ.get("CHAT_GUESTS", "false"),
        }
        argv = backend_argv(f"127.0.0.1:{port}")
        return Child(f"web.{index}", argv, env, self.logs / f"web.{index}.log", port=port)

    def _nginx(self) -> Child:
        exe = find_executable("nginx")
        if exe is None:
            raise SystemExit("nginx is not installed: scripts/bootstrap.sh apt:nginx")
        for sub in ("logs", "tmp"):
            (self.nginx_dir / sub).mkdir(parents=True, exist_ok=True)
        self.render_nginx(frozenset())
        argv = [exe, "-p", str(self.nginx_dir), "-c", str(self.nginx_dir / "nginx.conf"), "-e", "stderr"]
        return Child("nginx", argv, dict(os.environ), self.logs / "nginx.log", port=self.ports.lb)

    def _worker(self) -> Child:
        env = {**self._base_env(), "CHAT_WORKER_NAME": os.environ.get("CHAT_WORKER_NAME", "fleet-worker-1")}
        return Child("worker", [sys.executable, "-m", "backend.worker"], env, self.logs / "worker.log")

    async def build_ui(self) -> None:
        """Build the page once (`reflex export`); every UI process serves this one build."""
        app = self.state_dir / "ui-build"
        shutil.rmtree(app, ignore_errors=True)
        copy_app(app)
        # The page's chat engine connects to the origin it was served from: nginx.
        env = ui_env({**self._base_env(), "CHAT_BACKEND_URL": "/"})
        env.pop("REDIS_URL", None)
        argv = [ui_python(), "-m", "reflex", "export", "--frontend-only", "--no-zip"]
        self.say("building the UI (reflex export)...")
        with (self.logs / "ui-build.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=app, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
            code = await proc.wait()
        if code != 0 or not (self.ui_static / "index.html").exists():
            raise RuntimeError(f"reflex export failed ({code}); see {self.logs / 'ui-build.log'}")

    @property
    def ui_static(self) -> Path:
        return self.state_dir / "ui-build" / ".web" / "build" / "client"

    def _ui(self, index: int, port: int) -> Child:
        """One UI process: it serves the build, and nothing per tab or per message."""
        env = ui_env({**self._base_env(), "CHAT_UI_BUILD": str(self.ui_static)})
        env.pop("REDIS_URL", None)
        argv = [ui_python(), "-m", "hypercorn", "frontend.serve:app", "--bind", f"127.0.0.1:{port}"]
        return Child(f"ui.{index}", argv, env, self.logs / f"ui.{index}.log", port=port)

    # -- nginx configuration ------------------------------------------------------

    def render_nginx(self, down: frozenset[int]) -> None:
        servers = "\n".join(
            f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=3s{' down' if port in down else ''};"
            for port in self.ports.web
        )
        self.generation += 1
        text = TEMPLATE.read_text()
        values = {"prefix": str(self.nginx_dir), "port": str(self.ports.lb), "servers": servers}
        values.update(self._ui_nginx())
        values["generation"] = str(self.generation)
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        tmp = self.nginx_dir / "nginx.conf.tmp"
        tmp.write_text(text)
        tmp.replace(self.nginx_dir / "nginx.conf")

    def _ui_nginx(self) -> dict[str, str]:
        """The UI tier's part of nginx.conf; without a UI, nginx serves the web fleet alone."""
        if not self.with_ui:
            return {"ui_upstream": "", "ui_locations": UI_ABSENT_LOCATION}
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=3s;" for port in self.ports.ui)
        upstream = UI_UPSTREAM.replace("{{ui_servers}}", servers)
        return {"ui_upstream": upstream, "ui_locations": UI_LOCATIONS}

    async def _apply_readiness(self) -> None:
        """Mark not-ready instances down in nginx, unless none is ready (then a
        503 from any instance says more than nginx's 502)."""
        web = self.web
        ready = {c.port for c in web if c.ready}
        down = frozenset(c.port for c in web if not c.ready and c.port is not None) if ready else frozenset()
        if down == self.nginx_down:
            return
        self.render_nginx(down)
        nginx = self.children.get("nginx")
        if nginx is not None and nginx.pid is not None:
            os.kill(nginx.pid, signal.SIGHUP)  # graceful reload: open connections stay
            self.reloads += 1
            await self._await_generation()
            names = ", ".join(c.name for c in web if c.port in down) or "none"
            self.say(f"nginx reloaded; instances marked down: {names}")
        self.nginx_down = down
        self.write_state()

    async def _await_generation(self) -> None:
        """Until nginx's new workers answer (several times in a row: for a moment
        the old workers still accept too), bounded by a few seconds."""
        wanted = str(self.generation).encode()
        in_a_row = 0
        for _ in range(100):
            in_a_row = in_a_row + 1 if await http_body(self.ports.lb, "/fleet-config-generation") == wanted else 0
            if in_a_row >= 3:
                return
            await asyncio.sleep(0.05)
        self.say(f"nginx did not pick up configuration {self.generation} within 5 s")

    async def _watch_readiness(self) -> None:
        while not self.stopping.is_set():
            for child in self.web:
                if child.port is not None:
                    child.ready = child.pid is not None and await http_status(child.port, "/readyz") == 200
            await self._apply_readiness()
            self.write_state()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), READY_POLL)

    # -- supervision ------------------------------------------------------------------

    def say(self, text: str) -> None:
        sys.stdout.write(f"{'fleet':<9}| {text}\n")
        sys.stdout.flush()

    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "ready": self.ready,
            "failed": self.failed,
            "lb_url": self.lb_url,
            "redis_url": self.redis_url,
            "database_url": self.database_url,
            "ui_url": self.ui_url if self.with_ui else None,
            "nginx_reloads": self.reloads,
            "nginx_down": sorted(self.nginx_down),
            "processes": {
                name: {"pid": c.pid, "port": c.port, "starts": c.starts, "ready": c.ready, "exits": c.exits}
                for name, c in self.children.items()
            },
        }
        tmp = self.state_dir / "fleet.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_dir / "fleet.json")

    async def _supervise(self, child: Child) -> None:
        """Run ``child`` until the fleet stops, restarting it whenever it exits."""
        crashes = 0
        while not self.stopping.is_set():
            await child.start()
            assert child.proc is not None
            self.write_state()
            pump = asyncio.create_task(child.pump(child.proc))
            code = await child.proc.wait()
            await pump
            child.ready = False
            child.exits.append(code)
            self.write_state()
            if self.stopping.is_set() or not child.restart:
                return
            crashes = crashes + 1 if time.monotonic() - child.started_at < CRASH_LOOP_SECONDS else 0
            if crashes >= CRASH_LOOP_LIMIT:
                self.failed = f"{child.name} keeps exiting (last code {code}); see {child.log_path}"
                self.say(self.failed)
                self.stopping.set()
                return
            self.say(f"{child.name} exited with {code}; restarting")
            await asyncio.sleep(RESTART_DELAY)

    async def _launch(self, child: Child) -> None:
        self.children[child.name] = child
        self.tasks.append(asyncio.create_task(self._supervise(child)))
        await wait_until(lambda: _started(child), 10, f"{child.name} to start")

    async def _expect_up(self, check: Any, timeout: float, child: Child, what: str) -> None:
        async def up() -> bool:
            if self.failed or (child.proc is not None and child.proc.returncode is not None and child.starts > 0):
                raise RuntimeError(f"{child.name} exited while starting; see {child.log_path}")
            return bool(await check())

        await wait_until(up, timeout, what)

    async def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.ports.cluster:
            for node in self._cluster_nodes():
                await self._launch(node)
                await self._expect_up(lambda n=node: redis_answers(n.port), 15, node, f"{node.name} (cluster)")
            await self._form_cluster()
        else:
            redis = self._redis()
            await self._launch(redis)
            await self._expect_up(lambda: redis_answers(self.ports.redis), 15, redis, "redis-server")
        if self.ports.postgres is not None:
            postgres = self._postgres()
            await self._launch(postgres)
            await self._expect_up(lambda: _accepts(self.ports.postgres), 30, postgres, "PostgreSQL")
            await self._prepare_database()
        for index, port in enumerate(self.ports.web, start=1):
            web = self._web(index, port)
            await self._launch(web)
        for web in self.web:
            await self._expect_up(lambda w=web: _is_ready(w), 40, web, f"{web.name} /readyz")
        if self.with_ui:
            # Built before nginx starts: nginx serves the build.
            await self.build_ui()
        nginx = self._nginx()
        await self._launch(nginx)
        await self._expect_up(lambda: _answers(self.ports.lb), 15, nginx, "nginx")
        self.tasks.append(asyncio.create_task(self._watch_readiness()))
        if self.with_worker:
            await self._launch(self._worker())
        if self.with_ui:
            for index, port in enumerate(self.ports.ui, start=1):
                ui = self._ui(index, port)
                await self._launch(ui)
                await self._expect_up(lambda p=port: _answers(p, "/"), 60, ui, f"the UI process {ui.name}")
        self.ready = True
        self.write_state()
        where = f"open {self.ui_url}  (load balancer {self.lb_url})" if self.with_ui else f"load balancer {self.lb_url}"
        self.say(f"fleet ready: {where}; Ctrl-C stops everything")

    async def stop(self) -> None:
        self.stopping.set()
        uis = [name for name in self.children if name.startswith("ui.")]
        nodes = [name for name in self.children if name.startswith("redis.")]
        order = [*uis, "worker", "nginx", *[c.name for c in self.web], "redis", *nodes, "postgres"]
        for name in order:
            child = self.children.get(name)
            if child is not None:
                await child.stop()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.ready = False
        self.write_state()
        self.say("fleet stopped")


async def _started(child: Child) -> bool:
    return child.starts > 0


async def _is_ready(child: Child) -> bool:
    if child.port is None:
        return False
    child.ready = await http_status(child.port, "/readyz") == 200
    return child.ready


async def _accepts(port: int | None) -> bool:
    """Something accepts TCP connections on the port (PostgreSQL, before it serves)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _answers(port: int, path: str = "/healthz") -> bool:
    return await http_status(port, path, timeout=2.0) is not None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="scripts/fleet.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--state-dir", default=env("FLEET_STATE_DIR", str(ROOT / "data" / "fleet")))
    p.add_argument("--instances", type=int, default=int(env("FLEET_INSTANCES", "3")))
    p.add_argument("--lb-port", type=int, default=int(env("FLEET_PORT", "8080")), help="nginx (0: any free port)")
    p.add_argument("--redis-port", type=int, default=int(env("FLEET_REDIS_PORT", "6390")))
    p.add_argument(
        "--web-port", type=int, default=int(env("FLEET_WEB_PORT", "8001")), help="first instance; the next ones follow"
    )
    p.add_argument(
        "--ui-port", type=int, default=int(env("FLEET_UI_PORT", "3000")), help="first UI process; the next ones follow"
    )
    p.add_argument("--ui-processes", type=int, default=int(env("FLEET_UI_PROCESSES", "2")))
    p.add_argument("--no-ui", action="store_true", help="skip the Reflex UI")
    p.add_argument("--no-worker", action="store_true", help="skip the worker (mentions and the archiver)")
    p.add_argument("--postgres-port", type=int, default=int(env("FLEET_POSTGRES_PORT", "5490")))
    p.add_argument("--no-postgres", action="store_true", help="no system of record: Redis alone keeps the history")
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        default=env("FLEET_REDIS_CLUSTER", "") not in ("", "0"),
        help="a 3-master Redis Cluster (from --redis-port on) instead of one Redis",
    )
    return p.parse_args(argv)


def choose_ports(args: argparse.Namespace) -> Ports:
    """0 means any free port; a fixed port that is taken stops here with a clear message."""

    def pick(port: int, what: str) -> int:
        if port == 0:
            return free_port()
        check_port_free(port, what)
        return port

    web = [pick(0 if args.web_port == 0 else args.web_port + i, f"web.{i + 1}") for i in range(args.instances)]
    count = 0 if args.no_ui else args.ui_processes
    ui = [pick(0 if args.ui_port == 0 else args.ui_port + i, f"ui.{i + 1}") for i in range(count)]
    postgres = None if args.no_postgres else pick(args.postgres_port, "postgres")
    redis = pick(args.redis_port, "redis")
    cluster = []
    if args.redis_cluster:
        # three masters on consecutive ports from --redis-port, each bus port 100 above
        ports = [redis, *(pick(0 if args.redis_port == 0 else args.redis_port + i, "redis") for i in (1, 2))]
        cluster = [(port, pick(0 if args.redis_port == 0 else port + 100, "redis bus")) for port in ports]
    return Ports(lb=pick(args.lb_port, "nginx"), redis=redis, web=web, ui=ui, postgres=postgres, cluster=cluster)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.instances < 1:
        raise SystemExit("--instances must be at least 1")
    if args.ui_processes < 1 and not args.no_ui:
        raise SystemExit("--ui-processes must be at least 1 (or --no-ui)")
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(serve(Fleet(state_dir, choose_ports(args), worker=not args.no_worker, ui=not args.no_ui)))


async def serve(fleet: Fleet) -> int:
    """Start ``fleet`` and keep it running until SIGINT/SIGTERM, or until it fails."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, fleet.stopping.set)
    try:
        starting = asyncio.create_task(fleet.start())
        stopped = asyncio.create_task(fleet.stopping.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is not None:
            fleet.failed = str(starting.exception())
            fleet.say(f"could not start: {fleet.failed}")
        elif not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        else:
            await stopped
    finally:
        await fleet.stop()
    return 1 if fleet.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
