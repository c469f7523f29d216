"""fleetchat benchmark driver: fleetchat side by side with its peers, in one run.

    .venv/bin/python -m bench.run [--rounds 3] [--targets fleetchat,node,naive] ...
    .venv/bin/python -m bench.run --smoke          # tiny parameters, < 60 s
    .venv/bin/python -m bench.run --redis-cluster  # every target over a 3-master Redis Cluster

It starts its own redis-server on a free port (with --redis-cluster: three, joined
into one Redis Cluster), two instances of each target on free ports (127.0.0.1 only)
and the Node load generator (bench/loadgen), and runs the scenarios, alternating
targets within each round so that drift cancels:

  fanout      N clients over the instances in one room, S senders at R msg/s:
              deliveries/s, p50/p99 delivery latency, loss
  saturation  N clients, S senders as fast as their acks allow: deliveries/s
  idle        connections opened to one instance within a bounded time (capped),
              and that instance's RSS growth per connection

Each (round, target, scenario) gets fresh instances and an empty Redis (every master
of the cluster flushed). Results:
bench/results/<timestamp>.json (every run plus medians) and bench/results/latest.md
(the table, also printed). All loops are bounded in count and time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import importlib.metadata
import json
import os
import platform
import queue
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.fleet import cluster_args, cluster_create_argv, cluster_formed, free_port

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LOADGEN_DIR = BENCH / "loadgen"
NODE_PEER_DIR = BENCH / "peers" / "node-socketio"
NAIVE_PEER_DIR = BENCH / "peers" / "python-naive"
NPM_DIRS = (LOADGEN_DIR, NODE_PEER_DIR)
HOST = "127.0.0.1"
README = BENCH / "README.md"
README_START = "<!-- bench:latest:start -->"
README_END = "<!-- bench:latest:end -->"

ALL_TARGETS = ("fleetchat", "node", "naive")
ALL_SCENARIOS = ("fanout", "saturation", "idle")
SERVERS = ("hypercorn", "granian", "uvicorn")
CLIENTS = {"lean": "lean Socket.IO client", "socketio": "socket.io-client"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------ tooling --


def find_node() -> str:
    env = os.environ.get("BENCH_NODE")
    if env:
        return env
    local = ROOT / ".tools" / "node_modules" / ".bin" / "node"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    node = shutil.which("node")
    if not node:
        raise BenchError("node not found: install Node.js >= 20 or run scripts/bootstrap.sh node")
    return node


def find_npm() -> str:
    npm = shutil.which("npm")
    if not npm:
        raise BenchError("npm not found: it installs the load generator's and the Node peer's packages")
    return npm


def npm_deps_match(directory: Path) -> bool:
    """Whether node_modules holds every package of the lockfile at its locked version."""
    try:
        lock = json.loads((directory / "package-lock.json").read_text())
    except (OSError, ValueError):
        return False
    for path, meta in lock.get("packages", {}).items():
        if not path or meta.get("link") or meta.get("optional") or meta.get("dev"):
            continue
        try:
            installed = json.loads((directory / path / "package.json").read_text())
        except (OSError, ValueError):
            return False
        if installed.get("version") != meta.get("version"):
            return False
    return True


def ensure_npm_deps(directory: Path, timeout: float = 600) -> None:
    """Install a package's node_modules from its lockfile (npm ci) unless it already matches it."""
    if npm_deps_match(directory):
        return
    with open(directory / "package.json") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one install at a time when several drivers start together
        try:
            if npm_deps_match(directory):
                return
            npm = find_npm()
            log(f"installing npm packages in {directory.relative_to(ROOT)} (npm ci)")
            base = ["--no-audit", "--no-fund", "--loglevel=error"]
            proc = subprocess.run([npm, "ci", *base], cwd=directory, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                log(f"npm ci failed ({proc.stderr.strip()[-300:]}); trying npm install")
                proc = subprocess.run(
                    [npm, "install", *base], cwd=directory, capture_output=True, text=True, timeout=timeout
                )
            if proc.returncode != 0 or not npm_deps_match(directory):
                raise BenchError(f"npm install failed in {directory}: {proc.stderr.strip()[-1000:]}")
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def raise_nofile(want: int = 65536) -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for new_hard in (max(hard, want), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, parents first (from /proc, psutil-free)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        if p in out:
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_s(pids: list[int], system_only: bool = False) -> float:
    """utime + stime (or stime alone: the kernel's share, system calls) of pids and all
    their descendants, in seconds (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in pids:
        for p in process_tree(root):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (0 if system_only else int(fields[11])) + int(fields[12])
    return total / tick


def rss_kb(pid: int) -> int:
    """VmRSS of pid and all its descendants, in kB."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def git_commit(root: Path = ROOT) -> str | None:
    """The measured tree's commit, with '+dirty' when backend/ or bench/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "backend", "bench"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    i0, t0 = sample()
    time.sleep(seconds)
    i1, t1 = sample()
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


def wait_quiet(threshold: float, timeout: float) -> float:
    """Wait (bounded) until nothing else keeps the CPUs busy; return the last busy fraction seen."""
    deadline = time.monotonic() + timeout
    busy = cpu_busy()
    warned = False
    while busy > threshold and time.monotonic() < deadline:
        if not warned:
            log(f"machine is {busy:.0%} busy before the run: waiting up to {timeout:.0f}s for it to calm down")
            warned = True
        busy = cpu_busy()
    if busy > threshold:
        log(f"machine still {busy:.0%} busy: measuring anyway (recorded as background_cpu)")
    return busy


def py_version(name: str) -> str | None:
    """An installed Python package's version, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_info() -> dict:
    """What every report records about the machine: CPU model, cores, memory, kernel, Python."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def machine_info(node: str) -> dict:
    def pkg_version(directory: Path, name: str) -> str | None:
        try:
            return json.loads((directory / "node_modules" / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            return None

    node_v = subprocess.run([node, "-v"], capture_output=True, text=True).stdout.strip()
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        **host_info(),
        "node": node_v,
        "redis": redis_v.split(" v=")[1].split()[0] if " v=" in redis_v else redis_v,
        "python_socketio": py_version("python-socketio"),
        "hypercorn": py_version("hypercorn"),
        "node_socketio": pkg_version(NODE_PEER_DIR, "socket.io"),
        "node_redis_adapter": pkg_version(NODE_PEER_DIR, "@socket.io/redis-adapter"),
        "loadgen_socketio_client": pkg_version(LOADGEN_DIR, "socket.io-client"),
    }


# --------------------------------------------------------------- processes --


class Proc:
    """A child process in its own session, stopped by its process group id."""

    def __init__(self, name: str, argv: list[str], cwd: Path, env: dict, logfile: Path):
        self.name = name
        self.logfile = logfile
        self._log = open(logfile, "wb")  # noqa: SIM115 - lives as long as the process
        self.p = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 2000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # the group may outlive its leader
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()


class Redis:
    """The bench's own redis-server on a free port, keeping nothing on disk."""

    cluster = False

    def __init__(self, logdir: Path, name: str = "redis", extra: list[str] | None = None):
        self.port = free_port()
        self.proc = Proc(
            name,
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxclients",
                "20000",
                "--loglevel",
                "warning",
                *(extra or []),
            ],
            ROOT,
            dict(os.environ),
            logdir / f"{name}.log",
        )
        self.url = f"redis://{HOST}:{self.port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                time.sleep(0.05)
        self.proc.stop()
        raise BenchError(f"redis-server did not start: {self.proc.tail()}")

    def command(self, *args: str) -> str:
        payload = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(payload.encode())
            return s.recv(4096).decode().strip()

    @property
    def pids(self) -> list[int]:
        """The redis-server processes, for their CPU time."""
        return [self.proc.pid]

    def info(self, section: str) -> str:
        """One INFO section, read to its end."""
        return self.bulk("INFO", section)

    def bulk(self, *args: str) -> str:
        """A command whose reply is a bulk string (INFO, CLUSTER INFO), read to its end."""
        payload = (f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode()
        with socket.create_connection((HOST, self.port), timeout=5) as s:
            s.sendall(payload)
            data = b""
            while b"\r\n" not in data:
                data += s.recv(65536)
            head, _, rest = data.partition(b"\r\n")
            size = int(head[1:])
            while len(rest) < size:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return rest[:size].decode()

    def commands(self) -> dict[str, int]:
        """Calls per command since the last CONFIG RESETSTAT (``INFO commandstats``)."""
        out: dict[str, int] = {}
        for line in self.info("commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                out[name.removeprefix("cmdstat_")] = int(rest.split(",")[0].removeprefix("calls="))
        return out

    def flush(self) -> None:
        if self.command("CONFIG", "RESETSTAT") != "+OK":
            raise BenchError("redis CONFIG RESETSTAT failed")
        if self.command("FLUSHALL") != "+OK":
            raise BenchError("redis FLUSHALL failed")

    def stop(self) -> None:
        self.proc.stop()


class RedisCluster:
    """``--redis-cluster``: three redis-servers (the same settings as ``Redis``, each with
    its nodes.conf in a dir beside the logs and its cluster bus on a free port), joined by
    ``redis-cli --cluster create`` into one cluster of three masters and no replicas.
    ``url`` names the first node, as a deployment's ``REDIS_URL`` would; the clients find
    the others from it. Flushing, command counts and CPU time cover every master."""

    cluster = True

    def __init__(self, logdir: Path, masters: int = 3):
        self.nodes: list[Redis] = []
        try:
            for i in range(1, masters + 1):
                data = logdir / f"redis-{i}"
                data.mkdir(parents=True, exist_ok=True)
                self.nodes.append(Redis(logdir, f"redis-{i}", ["--dir", str(data), *cluster_args(free_port())]))
            cli = shutil.which("redis-cli")
            if cli is None:
                raise BenchError("redis-cli not found: it forms the cluster (Debian's redis-tools)")
            argv = cluster_create_argv(cli, [n.port for n in self.nodes])
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if done.returncode != 0:
                raise BenchError(f"redis-cli --cluster create failed: {(done.stdout + done.stderr)[-2000:]}")
            deadline = time.monotonic() + 30
            while not all(self._ok(n) for n in self.nodes):
                if time.monotonic() > deadline:
                    raise BenchError("the Redis Cluster did not say cluster_state:ok within 30 s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.port = self.nodes[0].port
        self.url = f"redis://{HOST}:{self.port}"

    def _ok(self, node: Redis) -> bool:
        try:
            info = node.bulk("CLUSTER", "INFO")
        except (OSError, ValueError):
            return False
        return cluster_formed(info, len(self.nodes))

    @property
    def pids(self) -> list[int]:
        return [n.proc.pid for n in self.nodes]

    def commands(self) -> dict[str, int]:
        """Calls per command since the last flush, summed over the masters."""
        out: dict[str, int] = {}
        for node in self.nodes:
            for name, calls in node.commands().items():
                out[name] = out.get(name, 0) + calls
        return out

    def flush(self) -> None:
        """CONFIG RESETSTAT and FLUSHALL on every master (each holds its slots' keys)."""
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@dataclass
class TargetSpec:
    name: str
    label: str
    instances: int
    uses_redis: bool = True
    extra: list[str] = field(default_factory=list)
    server: str = "hypercorn"
    kind: str = ""  # fleetchat | node | naive; name is the target's key in the report
    env: dict[str, str] = field(default_factory=dict)
    """Set in the target's environment (``fleetchat-accel-off``: ``CHAT_ACCEL=off``)."""
    root: Path = ROOT
    """The checkout fleetchat is served from (``fleetchat@DIR``: another worktree)."""

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name.split(":", 1)[0].removesuffix("-embedded")

    def command(self, port: int, node: str) -> tuple[list[str], Path, dict]:
        env = dict(os.environ)
        env["PORT"] = str(port)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        if self.kind == "fleetchat":
            # the bench is one client address opening thousands of sockets at full speed: lift the
            # abuse limits (per-connection message rate, connects per address, connections per instance)
            env["CHAT_RATE"] = "100000"
            env["CHAT_RATE_BURST"] = "100000"
            env["CHAT_CONNECTS_PER_MINUTE"] = "0"
            env["CHAT_MAX_CONNECTIONS"] = "1000000"
            return (python_server(self.server, "backend.app:asgi", port, self.extra), self.root, env)
        if self.kind == "node":
            return ([node, "server.js", *self.extra], NODE_PEER_DIR, env)
        if self.kind == "naive":
            env["PYTHONPATH"] = str(NAIVE_PEER_DIR)
            return (python_server(self.server, "naive_peer:asgi", port, self.extra), NAIVE_PEER_DIR, env)
        raise BenchError(f"unknown target {self.name}")


def python_server(server: str, app: str, port: int, extra: list[str]) -> list[str]:
    """argv serving an ASGI app on 127.0.0.1:port with one worker process."""
    if server == "hypercorn":
        return [sys.executable, "-m", "hypercorn", app, "--bind", f"{HOST}:{port}", *extra]
    if server == "granian":
        argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port)]
        return [*argv, "--workers", "1", "--no-access-log", *extra, app]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port), *extra]
    raise BenchError(f"unknown ASGI server {server}")


def target_spec(entry: str, args: argparse.Namespace) -> TargetSpec:
    """`kind[:server[:args]]`, e.g. `fleetchat`, `fleetchat:granian:--loop uvloop`, `naive:uvicorn`."""
    kind, _, rest = entry.partition(":")
    server, _, extra_s = rest.partition(":")
    # fleetchat@DIR: the same target served from another checkout (an older commit's worktree)
    kind, _, tree = kind.partition("@")
    root = Path(tree).resolve() if tree else ROOT
    # fleetchat-accel-off: fleetchat with none of the fast path's cuts (the stock libraries)
    accel_env = {"CHAT_ACCEL": "off"} if kind == "fleetchat-accel-off" else {"CHAT_ACCEL": "on"}
    kind = "fleetchat" if kind == "fleetchat-accel-off" else kind
    if kind not in ALL_TARGETS:
        raise SystemExit(f"unknown target {kind!r}; choose from {ALL_TARGETS}")
    if server and (kind == "node" or server not in SERVERS):
        raise SystemExit(f"bad server {server!r} for {kind}; Python targets take one of {SERVERS}")
    cluster = getattr(args, "redis_cluster", False)
    if kind == "node":
        extra = shlex.split(args.node_args)
        desc = "Node socket.io 4 + redis-adapter"
        if cluster:
            desc = "Node socket.io 4 + sharded redis-adapter (Redis Cluster)"
        return TargetSpec(entry, " ".join([desc, *extra]), args.instances, True, extra)
    default_server, default_args = (
        (args.fleetchat_server, args.fleetchat_args) if kind == "fleetchat" else (args.naive_server, args.naive_args)
    )
    server = server or default_server
    extra = shlex.split(extra_s if rest else default_args)
    desc = " ".join([server, *extra])
    if kind == "naive":
        # over a cluster it talks to the first node only: classic pub/sub reaches every node
        over = ", one node of a Redis Cluster" if cluster else ""
        label = f"naive python-socketio + AsyncRedisManager ({desc}{over})"
        return TargetSpec(entry, label, args.instances, True, extra, server)
    if not (root / "backend" / "app.py").exists():
        raise LookupError(f"fleetchat: backend/app.py not found in {root}")
    off = ", CHAT_ACCEL=off" if accel_env["CHAT_ACCEL"] == "off" else ""
    if tree:
        off += f", at commit {git_commit(root)}"
    if args.fleetchat_mode == "embedded":
        label = f"fleetchat ({desc}, EMBEDDED: one instance, no Redis{off})"
        return TargetSpec(entry, label, 1, False, extra, server, kind="fleetchat", env=accel_env, root=root)
    label = f"fleetchat ({desc}, Redis {'Cluster ' if cluster else ''}fleet{off})"
    return TargetSpec(entry, label, args.instances, True, extra, server, kind="fleetchat", env=accel_env, root=root)


def wait_ready(proc: Proc, port: int, timeout: float = 40) -> None:
    url = f"http://{HOST}:{port}/socket.io/?EIO=4&transport=polling"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited with {proc.p.returncode}:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"{proc.name} not ready on port {port} after {timeout}s ({last}):\n{proc.tail()}")


class Fleet:
    """The instances of one target, started fresh for one scenario."""

    def __init__(self, spec: TargetSpec, redis: Redis | RedisCluster, node: str, logdir: Path, tag: str):
        self.spec = spec
        self.redis = redis
        self.procs: list[Proc] = []
        self.ports: list[int] = []
        try:
            for i in range(spec.instances):
                port = free_port()
                argv, cwd, env = spec.command(port, node)
                env.pop("REDIS_CLUSTER", None)
                if spec.uses_redis:
                    env["REDIS_URL"] = redis.url  # fleetchat asks the node whether it is a cluster
                    if redis.cluster and spec.kind == "node":
                        env["REDIS_CLUSTER"] = "1"  # createCluster + createShardedAdapter
                else:
                    env.pop("REDIS_URL", None)
                proc = Proc(f"{spec.name}#{i}", argv, cwd, env, logdir / f"{tag}-{i}.log")
                self.procs.append(proc)
                self.ports.append(port)
            for proc, port in zip(self.procs, self.ports, strict=True):
                wait_ready(proc, port)
        except BaseException:
            self.stop()
            raise

    @property
    def urls(self) -> list[str]:
        return [f"http://{HOST}:{p}" for p in self.ports]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


# ----------------------------------------------------------------- loadgen --


class Loadgen:
    def __init__(self, node: str, cfg: dict, logfile: Path):
        self._log = open(logfile, "ab")  # noqa: SIM115 - lives as long as the process
        self.p = subprocess.Popen(
            [node, str(LOADGEN_DIR / "loadgen.js"), json.dumps(cfg)],
            cwd=LOADGEN_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        for line in self.p.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.lines.put(json.loads(line))
                except ValueError:
                    pass
        self.lines.put(None)

    def next_event(self, timeout: float) -> dict:
        try:
            ev = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"load generator gave no output within {timeout:.0f}s") from None
        if ev is None:
            raise BenchError(f"load generator exited ({self.p.wait()}) without a result")
        return ev

    def until(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next_event(max(0.1, deadline - time.monotonic()))
            if ev.get("event") == event or (event != "result" and ev.get("event") == "result"):
                return ev

    def release(self) -> None:
        try:
            self.p.stdin.write("release\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def close(self) -> None:
        try:
            self.p.wait(15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(5)
        self._log.close()


# --------------------------------------------------------------- scenarios --


def run_room(
    args,
    node: str,
    fleet: Fleet,
    logfile: Path,
    *,
    clients: int,
    senders: int,
    rate: float,
    duration: float,
    window: int,
    room: str,
) -> dict:
    cfg = {
        "mode": "room",
        "urls": fleet.urls,
        "room": room,
        "clients": clients,
        "senders": senders,
        "rate": rate,
        "window": window,
        "duration": duration,
        "warmup": args.warmup,
        "workers": args.loadgen_workers,
        "client": args.client,
        "textBytes": args.text_bytes,
        "connectTimeout": args.connect_timeout,
        "drainTimeout": args.drain_timeout,
    }
    bound = args.connect_timeout + args.warmup + duration + args.drain_timeout + 60
    lg = Loadgen(node, cfg, logfile)
    profiler = None
    before = after = None
    try:
        res = lg.until("ready", bound)
        if res.get("event") == "ready":
            if args.py_spy and fleet.spec.kind != "node":
                profiler = start_profiler(args.py_spy, fleet, args.warmup + duration + 1, logfile)
            before = usage(fleet)
            res = lg.until("result", bound)
            after = usage(fleet)
    finally:
        lg.close()
        if profiler:
            stop_profiler(profiler)
    if not res.get("ok"):
        raise BenchError(f"load generator failed: {res.get('error')} {res.get('setup', '')}")
    loss = res["missing"]
    return {
        "deliveries_per_s": res["deliveries_per_s"],
        "p50_ms": res["latency"]["p50_ms"],
        "p99_ms": res["latency"]["p99_ms"],
        "max_ms": res["latency"]["max_ms"],
        "ack_p50_ms": res["ack_latency"]["p50_ms"],
        "ack_p99_ms": res["ack_latency"]["p99_ms"],
        "acked_per_s": res["acked_per_s"],
        "sent": res["sent"],
        "acked": res["acked"],
        "ack_failures": res["ack_failures"],
        "deliveries": res["deliveries"],
        "expected_deliveries": res["expected_deliveries"],
        "loss": loss,
        "duplicates": res["duplicates"],
        "disconnects": res["disconnects"],
        "drain_ms": res["drain_ms"],
        "loadgen_cpu_s": res.get("loadgen_cpu_s"),
        "loadgen_us_per_delivery": res.get("loadgen_us_per_delivery"),
        "loadgen_kernel_share": res.get("loadgen_kernel_share"),
        **(cost(before, after, res) if before and after else {}),
        "raw": res,
    }


def usage(fleet: Fleet) -> dict:
    """CPU seconds of the instances and of Redis, and Redis's command counts, now (summed over
    the masters of a cluster)."""
    pids = [p.pid for p in fleet.procs]
    server, system = cpu_s(pids), cpu_s(pids, system_only=True)
    redis = cpu_s(fleet.redis.pids) if fleet.spec.uses_redis else 0.0
    commands = fleet.redis.commands() if fleet.spec.uses_redis else {}
    return {"server": server, "system": system, "redis": redis, "commands": commands}


def cost(before: dict, after: dict, res: dict) -> dict:
    """What the sending phase (warm-up, measured window and drain) cost the servers:
    CPU per delivery is steadier on a shared machine than deliveries/s, and Redis
    commands per acked send count the round trips of one send."""
    deliveries, acked = res.get("deliveries") or 0, res.get("acked") or 0
    commands = {k: v - before["commands"].get(k, 0) for k, v in after["commands"].items()}
    commands = {k: v for k, v in sorted(commands.items()) if v}
    server, redis = after["server"] - before["server"], after["redis"] - before["redis"]
    return {
        "server_cpu_s": round(server, 2),
        "server_us_per_delivery": round(server * 1e6 / deliveries, 2) if deliveries else None,
        "server_us_per_send": round(server * 1e6 / acked, 1) if acked else None,
        "server_kernel_share": round((after["system"] - before["system"]) / server, 3) if server else None,
        "redis_cpu_s": round(redis, 2),
        "redis_us_per_send": round(redis * 1e6 / acked, 1) if acked else None,
        "redis_commands_per_send": {k: round(v / acked, 3) for k, v in commands.items()} if acked else {},
    }


def start_profiler(py_spy: str, fleet: Fleet, seconds: float, logfile: Path) -> subprocess.Popen:
    """py-spy on instance 0's serving process (hypercorn's worker: the last of its process tree)."""
    pid = process_tree(fleet.procs[0].pid)[-1]
    out = logfile.with_name(logfile.name.replace("-loadgen.log", f"-pyspy-{pid}.txt"))
    argv = [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds + 0.999)), "--rate", "200"]
    argv += ["--nonblocking", "--format", "raw", "--output", str(out)]
    log(f"profiling pid {pid} into {out}")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen) -> None:
    """Let py-spy finish its ``--duration`` and write its stacks (kill it after 30 s)."""
    try:
        profiler.wait(30)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()


def scenario_fanout(args, node, fleet, logfile):
    return run_room(
        args,
        node,
        fleet,
        logfile,
        clients=args.fanout_clients,
        senders=args.fanout_senders,
        rate=args.fanout_rate,
        duration=args.fanout_duration,
        window=1,
        room="bench-fanout",
    )


def scenario_saturation(args, node, fleet, logfile):
    return run_room(
        args,
        node,
        fleet,
        logfile,
        clients=args.sat_clients,
        senders=args.sat_senders,
        rate=0,
        duration=args.sat_duration,
        window=args.sat_window,
        room="bench-saturation",
    )


def scenario_idle(args, node, fleet, logfile):
    target_pid = fleet.procs[0].pid
    time.sleep(args.settle)
    before = rss_kb(target_pid)
    cfg = {
        "mode": "idle",
        "urls": fleet.urls[:1],
        "count": args.idle_cap,
        "duration": args.idle_duration,
        "concurrency": args.idle_concurrency,
        "workers": args.loadgen_workers,
        "client": args.client,
        "connectTimeout": args.connect_timeout,
        "hold": args.idle_duration + 60,
        "room": "bench-idle",
    }
    lg = Loadgen(node, cfg, logfile)
    profiler = None
    try:
        if args.py_spy and fleet.spec.kind != "node":
            profiler = start_profiler(args.py_spy, fleet, args.idle_duration, logfile)
        held = lg.until("held", args.idle_duration + args.connect_timeout + 60)
        if profiler is not None:
            stop_profiler(profiler)
        if held.get("event") != "held":
            raise BenchError(f"idle load generator failed: {held}")
        time.sleep(args.settle)
        after = rss_kb(target_pid)
        lg.release()
        res = lg.until("result", 60)
    finally:
        if profiler is not None:
            stop_profiler(profiler)
        lg.close()
    n = held["held"]
    return {
        "held": n,
        "still_held": res.get("still_held"),
        "attempts": held["attempts"],
        "failed": held["failed"],
        "errors": held["errors"],
        "open_s": held["elapsed_s"],
        "opened_per_s": round(n / held["elapsed_s"]) if n and held["elapsed_s"] else None,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_conn": round((after - before) / n, 2) if n else None,
    }


SCENARIOS = {"fanout": scenario_fanout, "saturation": scenario_saturation, "idle": scenario_idle}


# ----------------------------------------------------------------- summary --

METRICS = {
    "fanout": ("deliveries_per_s", "p50_ms", "p99_ms", "ack_p99_ms", "loss", "server_us_per_delivery"),
    "saturation": ("deliveries_per_s", "p50_ms", "p99_ms", "loss", "server_us_per_delivery", "redis_us_per_send"),
    "idle": ("held", "opened_per_s", "kb_per_conn"),
}


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict], targets: list[str], scenarios: list[str]) -> dict:
    out: dict = {}
    for t in targets:
        out[t] = {}
        for s in scenarios:
            ok = [r["result"] for r in runs if r["target"] == t and r["scenario"] == s and r.get("result")]
            failed = sum(1 for r in runs if r["target"] == t and r["scenario"] == s and r.get("error"))
            m = {k: median([r.get(k) for r in ok]) for k in METRICS[s]}
            if s != "idle":
                m["loss_total"] = sum(r["loss"] for r in ok)
            m["runs"] = len(ok)
            m["failed_runs"] = failed
            out[t][s] = m
    return out


def ratios(summary: dict, base: str) -> dict:
    out: dict = {}
    if base not in summary:
        return out

    def r(other: str, scn: str, key: str) -> float | None:
        a = summary[base].get(scn, {}).get(key)
        b = summary[other].get(scn, {}).get(key)
        return round(a / b, 4) if a and b else None

    for other in summary:
        if other == base:
            continue
        out[other] = {
            "saturation_deliveries": r(other, "saturation", "deliveries_per_s"),
            "fanout_p99": r(other, "fanout", "p99_ms"),
            "idle_held": r(other, "idle", "held"),
            "idle_opened_per_s": r(other, "idle", "opened_per_s"),
            "kb_per_conn": r(other, "idle", "kb_per_conn"),
        }
    return out


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "—"
    if digits < 0:  # significant digits, for ratios
        return f"{v:.{-digits}g}x"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.{digits}f}"
    return f"{int(v):,}"


def markdown(report: dict) -> str:
    m = report["machine"]
    p = report["params"]
    summ = report["summary"]
    commit = f" at commit {report['commit']}" if report.get("commit") else ""
    redis = f"a Redis {m['redis']} Cluster of 3 masters" if p.get("redis_cluster") else f"Redis {m['redis']}"
    lines = [
        f"Run {report['date']}{commit} on {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB; "
        f"Python {m['python']}, Node {m['node']}, {redis}; "
        f"medians of {p['rounds']} alternating rounds; load generator ({p['loadgen_workers']} worker process(es), "
        f"{CLIENTS[p.get('client', 'socketio')]}), "
        "Redis and both instances of each target share the machine.",
        "",
        "| target | fan-out deliveries/s | fan-out p50 ms | fan-out p99 ms | fan-out loss | "
        "saturation deliveries/s | idle conns held | idle conns opened/s | KB per conn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t, s in summ.items():
        f, sat, idle = s.get("fanout", {}), s.get("saturation", {}), s.get("idle", {})
        lines.append(
            f"| {report['labels'][t]} | {fmt(f.get('deliveries_per_s'), 0)} | {fmt(f.get('p50_ms'), 2)} | "
            f"{fmt(f.get('p99_ms'), 2)} | {fmt(f.get('loss_total'))} | {fmt(sat.get('deliveries_per_s'), 0)} | "
            f"{fmt(idle.get('held'))} | {fmt(idle.get('opened_per_s'), 0)} | {fmt(idle.get('kb_per_conn'), 1)} |"
        )
    fails = [(t, s) for t, ss in summ.items() for s, v in ss.items() if v.get("failed_runs")]
    if fails:
        lines += [
            "",
            "Failed runs (excluded from medians): "
            + ", ".join(f"{t}/{s}: {summ[t][s]['failed_runs']}" for t, s in fails),
        ]
    if report["ratios"]:
        base = report["ratio_base"]
        lines += [
            "",
            f"Ratios, {base} / peer (same run): saturation > 1 is better; fan-out p99 and KB per conn < 1 is "
            "better; conns held and opened/s > 1 is better.",
            "",
            "| peer | saturation deliveries/s | fan-out p99 | idle conns held | idle conns opened/s | KB per conn |",
            "|---|---|---|---|---|---|",
        ]
        for other, r in report["ratios"].items():
            lines.append(
                f"| {report['labels'][other]} | {fmt(r['saturation_deliveries'], -3)} | {fmt(r['fanout_p99'], -3)} | "
                f"{fmt(r['idle_held'], -3)} | {fmt(r.get('idle_opened_per_s'), -3)} | {fmt(r['kb_per_conn'], -3)} |"
            )
    per_round = []
    for t in summ:

        def values(scn: str, key: str, digits: int, t: str = t) -> str:
            vals = [
                r["result"].get(key) if r.get("result") else None
                for r in report["runs"]
                if r["target"] == t and r["scenario"] == scn
            ]
            return ", ".join(fmt(v, digits) for v in vals if v is not None) or "—"

        per_round.append(
            f"| {report['labels'][t]} | {values('fanout', 'p99_ms', 1)} | {values('saturation', 'deliveries_per_s', 0)}"
            f" | {values('idle', 'held', 0)} |"
        )
    if p["rounds"] > 1:
        lines += [
            "",
            "Each round's value, in run order (the spread shows how much the shared machine moved):",
            "",
            "| target | fan-out p99 ms | saturation deliveries/s | idle conns held |",
            "|---|---|---|---|",
            *per_round,
        ]
    lines += [
        "",
        f"Parameters: fan-out {p['fanout_clients']} clients, {p['fanout_senders']} senders x {p['fanout_rate']} msg/s, "
        f"{p['fanout_duration']} s (+{p['warmup']} s warm-up); saturation {p['sat_clients']} clients, "
        f"{p['sat_senders']} senders, window {p['sat_window']}, {p['sat_duration']} s; idle: up to "
        f"{p['idle_cap']} connections to one instance within {p['idle_duration']} s.",
    ]
    busy = [r for r in report["runs"] if r.get("background_cpu", 0) > p["quiet_threshold"]]
    if busy:
        worst = max(r["background_cpu"] for r in busy)
        lines += [
            "",
            f"Warning: {len(busy)} of {len(report['runs'])} runs started while other processes kept the machine "
            f"busy (up to {worst:.0%} of the CPUs): their numbers are not comparable.",
        ]
    if report.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def update_readme(table: str) -> None:
    text = README.read_text()
    if README_START not in text or README_END not in text:
        raise BenchError(f"{README} has no {README_START} ... {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    README.write_text(f"{head}{README_START}\n{table}{README_END}{tail}")


# -------------------------------------------------------------------- main --


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help="comma list of fleetchat,node,naive (and fleetchat-accel-off: fleetchat on the stock libraries); "
        "a Python target may name its ASGI server and "
        "that server's args: fleetchat:granian, 'fleetchat:hypercorn:-k uvloop', naive:granian; "
        "fleetchat@DIR serves fleetchat from another checkout (an older commit's worktree)",
    )
    ap.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="comma list of fanout,saturation,idle")
    ap.add_argument("--instances", type=int, default=2, help="instances per target")
    ap.add_argument("--fanout-clients", type=int, default=200)
    ap.add_argument("--fanout-senders", type=int, default=5)
    ap.add_argument("--fanout-rate", type=float, default=20, help="msg/s per sender")
    ap.add_argument("--fanout-duration", type=float, default=10, help="seconds measured")
    ap.add_argument("--sat-clients", type=int, default=100)
    ap.add_argument("--sat-senders", type=int, default=10)
    ap.add_argument("--sat-window", type=int, default=1, help="sends in flight per sender")
    ap.add_argument("--sat-duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=1, help="seconds sent before measuring (checked for loss)")
    ap.add_argument("--idle-cap", type=int, default=20000)
    ap.add_argument("--idle-duration", type=float, default=20, help="seconds allowed to open connections")
    ap.add_argument("--idle-concurrency", type=int, default=100, help="connection attempts in flight")
    ap.add_argument("--loadgen-workers", type=int, default=2, help="load generator processes")
    ap.add_argument(
        "--client",
        choices=tuple(CLIENTS),
        default="lean",
        help="the load generator's Socket.IO client: lean (bench/loadgen/lean-client.js) or socket.io-client",
    )
    ap.add_argument("--text-bytes", type=int, default=32)
    ap.add_argument("--connect-timeout", type=float, default=30)
    ap.add_argument(
        "--drain-timeout",
        type=float,
        default=30,
        help="seconds after sending stops within which every acked message must arrive (else: loss)",
    )
    ap.add_argument("--settle", type=float, default=2.0, help="seconds before each RSS reading")
    ap.add_argument(
        "--fleetchat-mode",
        choices=("fleet", "embedded"),
        default="fleet",
        help="embedded = one instance, no REDIS_URL (labelled as such)",
    )
    ap.add_argument("--fleetchat-server", choices=SERVERS, default="hypercorn", help="ASGI server for fleetchat")
    ap.add_argument(
        "--fleetchat-args",
        default="-k uvloop --workers 0",
        help="extra ASGI server args for fleetchat (default: the Procfile's, uvloop in the server's own process)",
    )
    ap.add_argument("--node-args", default="")
    ap.add_argument(
        "--redis-cluster",
        action="store_true",
        help="start a 3-master Redis Cluster (redis-server --cluster-enabled yes, redis-cli --cluster create) "
        "instead of one redis-server, and point every target at it: REDIS_URL names its first node "
        "(fleetchat detects the cluster), the Node peer gets REDIS_CLUSTER=1 (createCluster + "
        "createShardedAdapter), the naive peer uses that node alone (classic pub/sub reaches every node); "
        "every master is flushed between runs and Redis CPU and commands are summed over them",
    )
    ap.add_argument("--naive-server", choices=SERVERS, default="hypercorn", help="ASGI server for the naive peer")
    ap.add_argument("--naive-args", default="", help="extra ASGI server args for the naive peer")
    ap.add_argument(
        "--py-spy",
        default="",
        metavar="PATH",
        help="py-spy executable: profile instance 0 of the Python targets during each scenario "
        "(collapsed stacks next to the logs)",
    )
    ap.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="before each run, wait while other processes keep more than this fraction of the CPUs busy",
    )
    ap.add_argument("--quiet-wait", type=float, default=60, help="longest wait for a quiet machine, seconds")
    ap.add_argument("--out-dir", type=Path, default=BENCH / "results")
    ap.add_argument("--update-readme", action="store_true", help="write the table into bench/README.md")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only print the table of an earlier run's report")
    ap.add_argument("--smoke", action="store_true", help="tiny parameters for a quick end-to-end check")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds = 1
        args.fanout_clients, args.fanout_senders, args.fanout_rate, args.fanout_duration = 10, 2, 10, 1.5
        args.sat_clients, args.sat_senders, args.sat_duration = 6, 2, 1.5
        args.idle_cap, args.idle_duration, args.idle_concurrency = 50, 5, 20
        args.warmup, args.settle, args.loadgen_workers = 0.3, 0.5, 1
        args.quiet_wait = 0
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop every child


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.py_spy and not (shutil.which(args.py_spy) or os.access(args.py_spy, os.X_OK)):
        raise SystemExit(f"--py-spy {args.py_spy}: not an executable")
    if args.render:
        table = markdown(json.loads(args.render.read_text()))
        if args.update_readme:
            update_readme(table)
        print(table)
        return 0
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for s in scenarios:
        if s not in ALL_SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; choose from {ALL_SCENARIOS}")
    skipped = [
        "(d) browser tab to browser tab through the Reflex frontend: not part of this driver; "
        "run `python -m bench.browser_latency` (Reflex UI + Chromium, writes bench/results/browser-<timestamp>.json)",
    ]
    specs: list[TargetSpec] = []
    for entry in targets:
        try:
            specs.append(target_spec(entry, args))
        except LookupError as e:
            log(f"skipping {e}")
            skipped.append(str(e))
    if not specs:
        raise SystemExit("no target to measure")

    nofile = raise_nofile()
    if "idle" in scenarios and args.idle_cap > nofile - 1000:
        # one instance holds every idle connection: keep headroom below its open-file limit
        args.idle_cap = max(1, nofile - 1000)
        log(f"open-file limit is {nofile} and cannot be raised here: idle connections capped at {args.idle_cap}")
    for d in NPM_DIRS:
        ensure_npm_deps(d)
    node = find_node()
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    logdir = args.out_dir / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    machine = machine_info(node)
    log(f"machine: {machine['cpu']}, {machine['cores']} cores; node {machine['node']}; logs in {logdir}")

    runs: list[dict] = []
    redis = RedisCluster(logdir) if args.redis_cluster else Redis(logdir)
    if redis.cluster:
        log(f"Redis Cluster of {len(redis.nodes)} masters on ports {', '.join(str(n.port) for n in redis.nodes)}")
    deadline_note = time.monotonic()
    try:
        for rnd in range(1, args.rounds + 1):
            for spec in specs:
                for scn in scenarios:
                    tag = f"r{rnd}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', spec.name)}-{scn}"
                    entry = {"round": rnd, "target": spec.name, "scenario": scn}
                    t0 = time.monotonic()
                    fleet = None
                    entry["background_cpu"] = wait_quiet(args.quiet_threshold, args.quiet_wait)
                    try:
                        redis.flush()
                        fleet = Fleet(spec, redis, node, logdir, tag)
                        entry["result"] = SCENARIOS[scn](args, node, fleet, logdir / f"{tag}-loadgen.log")
                        if any(not p.alive() for p in fleet.procs):
                            raise BenchError("an instance died during the scenario")
                    except BenchError as e:
                        entry.pop("result", None)
                        entry["error"] = str(e)[-2000:]
                        log(f"{tag}: FAILED: {str(e)[:500]}")
                    finally:
                        if fleet:
                            fleet.stop()
                    entry["seconds"] = round(time.monotonic() - t0, 1)
                    runs.append(entry)
                    if entry.get("result"):
                        res = entry["result"]
                        brief = {k: res.get(k) for k in METRICS[scn]}
                        log(f"{tag}: {brief} ({entry['seconds']} s)")
    finally:
        redis.stop()

    names = [s.name for s in specs]
    summary = summarize(runs, names, scenarios)
    fleetchats = [s.name for s in specs if s.kind == "fleetchat"]
    base = fleetchats[0] if fleetchats else "node" if "node" in names else names[0]
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "machine": machine,
        "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "targets": names,
        "scenarios": scenarios,
        "labels": {s.name: s.label for s in specs},
        "skipped": skipped,
        "runs": runs,
        "summary": summary,
        "ratio_base": base,
        "ratios": ratios(summary, base),
        "wall_s": round(time.monotonic() - deadline_note, 1),
    }
    json_path = args.out_dir / f"{stamp}.json"
    json_path.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    (args.out_dir / "latest.md").write_text(table)
    (args.out_dir / "latest.json").write_text(json.dumps(report, indent=1))
    if args.update_readme:
        update_readme(table)
    print(table)
    log(f"wrote {json_path} and {args.out_dir / 'latest.md'}")
    failed = [r for r in runs if r.get("error")]
    lossy = [r for r in runs if r.get("result", {}).get("loss")]
    if failed or lossy:
        log(f"{len(failed)} failed run(s), {len(lossy)} run(s) with loss")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
