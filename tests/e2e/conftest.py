"""Browser tests: a real chat backend, the Reflex app built once, Debian's Chromium.

The session starts one `hypercorn backend.app:asgi` (embedded mode, its own
SQLite file) on a free port, a TCP gate in front of it that a test can cut
and restore, and one `reflex run --env prod` (in the UI's own virtualenv, see
deploy/ui_venv.py) whose CHAT_BACKEND_URL points at the gate. Every test gets
a fresh browser context; each page in it is a tab with its own Reflex session,
hence its own chat user.

All e2e tests share these processes, so they are one xdist group: run the
suite with `--dist loadgroup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.fleet import copy_app
from deploy.ui_venv import ui_env, ui_python
from tests.support import Backend, free_port, rooms_listed, scrape

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # the thing polled is not up yet
            last_error = exc
        else:
            if value:
                return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


def run_async(coroutine: Any) -> Any:
    """Run a coroutine to completion from a sync test (Playwright's loop owns this thread)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name="e2e-async")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def tools_env() -> dict[str, str]:
    """The environment scripts/env.sh sets up: project-local node/bun first, Reflex offline."""
    env = dict(os.environ)
    bins = [str(ROOT / ".venv" / "bin"), str(ROOT / ".tools" / "node_modules" / ".bin")]
    env["PATH"] = os.pathsep.join([*bins, env.get("PATH", "")])
    env.setdefault("REFLEX_USE_SYSTEM_BUN", "1")
    env.setdefault("REFLEX_CHECK_LATEST_VERSION", "false")
    env.setdefault("REFLEX_TELEMETRY_ENABLED", "false")
    env.setdefault("REFLEX_DIR", str(ROOT / ".tools" / "reflex"))
    env.setdefault("BUN_INSTALL_CACHE_DIR", str(ROOT / ".tools" / "bun-cache"))
    env.pop("REDIS_URL", None)
    env.pop("CHAT_REDIS_URL", None)
    return env


def stop_process_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class ChatBackend(Backend):
    """One embedded-mode backend process (``tests.support.Backend``: the Procfile's
    command) that a test can restart on the same port and DB. It leads its own
    process group, so ``stop`` and ``kill`` reach everything it started."""

    def __init__(self, workdir: Path, ui_origins: list[str], name: str = "backend", redis_url: str = ""):
        super().__init__(db_dir=str(workdir), name=name, own_session=True)
        self.env = {**tools_env(), **{k: self.env[k] for k in ("PORT", "CHAT_DB_PATH", "PYTHONUNBUFFERED")}}
        self.env["CHAT_CORS_ORIGINS"] = ",".join(ui_origins)
        if redis_url:
            self.env["REDIS_URL"] = redis_url

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc)
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: the backend gets no chance to say goodbye to its clients."""
        super().kill()
        self.proc = None

    def log_tail(self, size: int = 3000) -> str:
        return self.log()[-size:]

    def connected_sockets(self) -> float:
        """The backend's own count of connected Socket.IO clients (from /metrics)."""
        return scrape(self.url, "fleetchat_connected_sockets")

    def room_members(self, room: str) -> int:
        for entry in rooms_listed(self.url):
            if entry["name"] == room:
                return int(entry["members"])
        return 0


class TcpGate:
    """A TCP forwarder in front of the backend that tests can cut and restore.

    Cut drops every forwarded connection and refuses new ones, so the UI's
    Socket.IO clients lose their backend and cannot come back until restored,
    while the tests still reach the backend directly.
    """

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-gate", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._started.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        if not self._open:  # cut while this connection was being set up
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))

    def _call(self, fn: Callable[[], None]) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def retarget(self, port: int) -> None:
        """Forward to another port from now on (connections to the old one are cut)."""

        def retarget() -> None:
            self.target_port = port

        self.cut()
        self._call(retarget)
        self.restore()

    def cut(self) -> None:
        def cut() -> None:
            self._open = False
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(cut)

    def restore(self) -> None:
        def restore() -> None:
            self._open = True

        self._call(restore)

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # and its self-pipe sockets (an unclosed loop is a ResourceWarning)


class ReflexApp:
    """`reflex run --env prod`: the app compiled and built once, frontend and backend on one port.

    It runs from a copy of the app, so its build (.web/, with this run's port baked
    in) never touches the working tree's, and each xdist worker that gets e2e tests
    has a stack of its own."""

    def __init__(self, workdir: Path, port: int, chat_backend_url: str, source: Path = ROOT):
        """`source` holds the app files (default: this checkout; the UI-tier bench passes an old commit's)."""
        self.root = copy_app(workdir / "ui", source)
        self.port = port
        self.url = f"http://localhost:{self.port}"
        self.log_path = workdir / "reflex.log"
        env = ui_env(tools_env())
        env.update(
            REFLEX_FRONTEND_PORT=str(self.port),
            REFLEX_BACKEND_PORT=str(self.port),
            CHAT_BACKEND_URL=chat_backend_url,
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [ui_python(), "-m", "reflex", "run", "--env", "prod"],
            cwd=self.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started = time.monotonic()
        wait_until(self._ready, 600, f"the Reflex app on {self.url} (log: {self.log_path})", every=0.25)
        self.startup_seconds = time.monotonic() - started

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            tail = self.log_path.read_bytes()[-3000:].decode(errors="replace")
            raise RuntimeError(f"reflex exited with {self.process.returncode}: {tail}")
        return http_get(f"{self.url}/ping")[0] == 200 and http_get(f"{self.url}/")[0] == 200

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.fixture(scope="session")
def e2e_workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fleetchat-e2e-") as path:
        yield Path(path)


@pytest.fixture(scope="session")
def ui_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def chat_backend(e2e_workdir: Path, ui_port: int) -> Iterator[ChatBackend]:
    if not (ROOT / "backend" / "app.py").exists():
        pytest.fail("backend/app.py is missing: the e2e tests need the real chat backend")
    backend = ChatBackend(e2e_workdir, [f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"])
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture(scope="session")
def gates(chat_backend: ChatBackend) -> Iterator[list[TcpGate]]:
    """Two ways to the backend: the UI's CHAT_BACKEND_URL lists both, to fail over in turn."""
    gates = [TcpGate(chat_backend.port), TcpGate(chat_backend.port)]
    yield gates
    for gate in gates:
        gate.close()


@pytest.fixture(scope="session")
def reflex_app(e2e_workdir: Path, ui_port: int, gates: list[TcpGate]) -> Iterator[ReflexApp]:
    app = ReflexApp(e2e_workdir, ui_port, ",".join(gate.url for gate in gates))
    yield app
    app.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("no `chromium` on PATH: apt-get install -y chromium (never `playwright install`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Any, reflex_app: ReflexApp, gates: list[TcpGate], chat_backend: ChatBackend) -> Iterator[Any]:
    for gate in gates:
        if gate.target_port != chat_backend.port:
            gate.retarget(chat_backend.port)
        gate.restore()
    context = browser.new_context(base_url=reflex_app.url, viewport={"width": 1100, "height": 720})
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def open_tab(context: Any) -> Callable[..., Any]:
    """Open a tab, pick a name, and wait until it is connected to the chat backend."""

    def open_tab(name: str) -> Any:
        page = context.new_page()
        page.goto("/")
        page.fill("#name-input", name)
        page.click("#name-submit")
        page.wait_for_selector("#conn-badge[data-status=connected]")
        return page

    return open_tab


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
