"""Scenario (e) of the benchmark: the UI tier under many browser tabs.

What one `reflex run --env prod` costs per open tab and per message, for the
two UI designs side by side in one run:

  pages         the working tree: the page holds no server-side state; the tab's
                engine (assets/fleetchat.js) talks to the chat backend itself
  server-state  commit 389cc22: one Reflex `ChatState` and one python-socketio
                client per tab inside the Reflex process; every message reaches
                the tab as a state delta over Reflex's `/_event` websocket

Each case (target, tabs, UI processes) gets a fresh embedded chat backend and
fresh Reflex UI process(es) (the e2e harness's `ChatBackend` and `ReflexApp`).
Simulated tabs then do at the protocol level what a Chromium tab of that design
does (checked against a real tab with `--check-browser`):

  both          GET the page
  server-state  open Reflex's Socket.IO websocket
                (`/_event/?token=<uuid>&EIO=4&transport=websocket`, subprotocol =
                the Reflex version) with the page's hydrate event riding in the
                CONNECT packet, as reflex's state.js connect() sends it; send
                pick_name (the start form's submit), follow the `_redirect` to
                /chat with on_load_internal (which runs enter_chat + listen),
                answer the timezone `_call_script` with set_tz; a message has
                arrived when its text first shows up in a `lines` delta
  pages         no socket to the UI server (frontend/chat.py no_reflex_socket);
                open the engine's own Socket.IO websocket to the backend with
                auth {name}, `join` the room, poll GET /api/rooms every 30 s; a
                message has arrived when the `message` event reaches the socket
                (render time in the browser is bench/browser_latency.py's job)

A sender straight to the backend then sends 1 message/s into each room for D
seconds; the text carries its send time. Per case: tabs present and joined,
delivered % (every tab must get every message of its room: loss, duplicates),
send->tab latency p50/p99, the CPU of the whole `reflex run` process tree
during the message phase, its RSS growth per tab (after the tabs opened vs
before), tabs dropped and rejoined, and the load generator's own CPU. Tabs
live in 2 worker processes (asyncio, raw Engine.IO over aiohttp websockets).

`--page-loads` measures the static UI tier instead: the page built once
(`reflex export --frontend-only --no-zip`), served by 1 and by 2
`hypercorn frontend.serve:app` processes (as `make fleet` runs them, without
nginx in front: a simulated browser goes to one process). A page load is a
browser's first visit of `/`: the HTML, then every asset it references (and
their static imports) over at most 6 kept-alive connections. A closed-loop
probe per process count, then an open-loop ladder of offered rates (fractions
of the probe), 1 and 2 processes alternating; reported is the highest rate
each sustained with nothing failed and p99 within `--page-p99-ms`.

    .venv/bin/python -m bench.ui_tier                         # the full run (~15 min)
    .venv/bin/python -m bench.ui_tier --tabs 5000 --rooms 100 --targets pages
    .venv/bin/python -m bench.ui_tier --page-loads            # 1 vs 2 static UI processes (~5 min)
    .venv/bin/python -m bench.ui_tier --smoke                 # 5 tabs, 3 s

Results: bench/results/ui-tier-<timestamp>.json and .md (ui-pages-* for
--page-loads). Exit status 1 when a `pages` case lost a message. Only
127.0.0.1 is ever contacted; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.run import free_port, host_info, process_tree, py_version, raise_nofile, rss_kb
from deploy.fleet import UI_FILES, copy_app
from deploy.ui_venv import ui_env, ui_package_version, ui_python
from tests.e2e.conftest import ChatBackend, ReflexApp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
DESIGNS = ("pages", "server-state")
OLD_COMMIT = "389cc22"

# A benchmark is one address opening thousands of sockets: lift the backend's abuse limits.
BACKEND_ENV = {
    "CHAT_RATE": "100000",
    "CHAT_RATE_BURST": "100000",
    "CHAT_CONNECTS_PER_MINUTE": "0",
    "CHAT_MAX_CONNECTIONS": "1000000",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
DIRECTORY_EVERY = 30.0  # seconds, as assets/fleetchat.js
ROOMS_PER_SENDER = 50  # the backend's default cap on rooms per connection
MAX_RECONNECTS = 3  # per tab; a real tab keeps trying, the bench counts and gives up
TEXT_PREFIX = "ui-tier"
DEFAULT_ROOM = "general"  # where both designs put a fresh tab; room 0 of the bench


def room_name(index: int) -> str:
    return DEFAULT_ROOM if index == 0 else f"room-{index}"


BACKGROUND: set[asyncio.Task] = set()  # fire-and-forget sends, referenced until done


def log(msg: str) -> None:
    print(f"[ui-tier {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------ the targets --


@dataclass
class PageFacts:
    """What the compiled page sends on /_event; read from the build, so a simulated tab speaks its dialect."""

    reflex_version: str
    hydrate_event: str
    on_load_internal: str
    hashes: list[str]
    state_schema: str
    chat_state: str | None  # the server-state design's ChatState path (None for pages)


def page_facts(ui_root: Path) -> PageFacts:
    """Parse .web/utils/context.jsx of a built app: event names, initial state hashes, state schema."""
    text = (ui_root / ".web" / "utils" / "context.jsx").read_text()
    events = re.findall(r"ReflexEvent\('([^']+)'", text)
    hydrate = next(e for e in events if e.endswith(".hydrate_and_load"))
    on_load = next(e for e in events if e.endswith(".on_load_internal"))
    hashes = json.loads(re.search(r"initialStateHashes = (\[[^\]]*\])", text).group(1))
    schema = re.search(r'stateSchema = "([^"]+)"', text).group(1)
    chat = re.search(r'"([a-z_.]+frontend___state____chat_state)"', text)
    version = ui_package_version("reflex") or ""
    return PageFacts(version, hydrate, on_load, hashes, schema, chat.group(1) if chat else None)


def export_old_design(dest: Path) -> Path:
    """The server-state design's app files, straight from git (nothing of the working tree)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", OLD_COMMIT, *UI_FILES], cwd=ROOT, capture_output=True, check=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
    return dest


# ------------------------------------------------- Socket.IO on a websocket --


class LinkDown(Exception):
    """The link's websocket failed or closed."""


class SioLink:
    """A Socket.IO v5 / Engine.IO v4 client on one websocket, as socket.io-client speaks it with
    transports ["websocket"]: no polling, answers the server's pings, acks by id.

    Incoming events go to `handler(json_array_text)` unparsed, so a tab parses only what it reads."""

    def __init__(
        self,
        session: Any,
        url: str,
        namespace: str,
        origin: str,
        protocols: tuple[str, ...] = (),
        frame_log: list[str] | None = None,
    ):
        self.session = session
        self.frame_log = frame_log  # every text frame sent but pongs, for --check-browser
        self.url = url
        self.prefix = "" if namespace == "/" else namespace + ","
        self.origin = origin
        self.protocols = protocols
        self.handler: Callable[[str], None] = lambda _text: None
        self.closed = asyncio.Event()
        self._connected: asyncio.Future | None = None
        self._acks: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._ws: Any = None
        self._reader: asyncio.Task | None = None

    async def connect(self, auth: Any, timeout: float) -> None:
        """Open the websocket and the namespace; `auth` rides in the CONNECT packet."""
        self._ws = await asyncio.wait_for(
            self.session.ws_connect(
                self.url,
                headers={"Origin": self.origin},
                protocols=self.protocols,
                max_msg_size=64 * 1024 * 1024,
                autoping=True,
            ),
            timeout,
        )
        opened = await self._ws.receive(timeout=timeout)
        if not isinstance(opened.data, str) or not opened.data.startswith("0"):
            await self.close()
            raise LinkDown(f"no Engine.IO open packet: {str(opened.data)[:200]}")
        self._connected = asyncio.get_running_loop().create_future()
        await self._send("40" + self.prefix + json.dumps(auth, separators=(",", ":")))
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except BaseException:
            await self.close()
            raise

    async def emit(self, event: str, data: Any) -> None:
        if self._ws is None or self.closed.is_set():
            raise LinkDown("not connected")
        await self._send("42" + self.prefix + json.dumps([event, data], separators=(",", ":")))

    async def call(self, event: str, data: Any, timeout: float) -> Any:
        """Emit with an ack id and wait for the ack's first argument."""
        if self._ws is None or self.closed.is_set():
            raise LinkDown("not connected")
        ack_id = self._next_id  # socket.io-client numbers acks from 0
        self._next_id += 1
        future = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        try:
            await self._send(f"42{self.prefix}{ack_id}" + json.dumps([event, data], separators=(",", ":")))
            args = await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(ack_id, None)
        return args[0] if args else None

    async def _send(self, text: str) -> None:
        if self.frame_log is not None:
            self.frame_log.append(text)
        await self._ws.send_str(text)

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if not isinstance(msg.data, str):
                    continue
                self._packet(msg.data)
                if self.closed.is_set():
                    break
        except Exception:  # any failure of the socket is the link going down
            pass
        finally:
            self._down(LinkDown("websocket closed"))

    def _packet(self, text: str) -> None:
        kind = text[:1]
        if kind == "2":  # Engine.IO ping from the server
            self._spawn(self._send_quietly("3"))
            return
        if kind == "1":
            self._down(LinkDown("engine.io close"))
            return
        if kind != "4" or len(text) < 2:
            return
        packet, rest = text[1], text[2:]
        if self.prefix and rest.startswith(self.prefix):
            rest = rest[len(self.prefix) :]
        if packet == "0":
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(rest)
        elif packet == "4":
            if self._connected is not None and not self._connected.done():
                self._connected.set_exception(LinkDown(f"connect refused: {rest[:200]}"))
        elif packet == "1":
            self._down(LinkDown("server disconnect"))
        elif packet == "2":
            self.handler(rest.lstrip("0123456789"))
        elif packet == "3":
            digits = len(rest) - len(rest.lstrip("0123456789"))
            future = self._acks.get(int(rest[:digits] or 0))
            if future is not None and not future.done():
                future.set_result(json.loads(rest[digits:]))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        BACKGROUND.add(task)
        task.add_done_callback(BACKGROUND.discard)

    async def _send_quietly(self, text: str) -> None:
        with contextlib.suppress(Exception):
            await self._ws.send_str(text)

    def _down(self, error: Exception) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(error)
        for future in self._acks.values():
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        self._down(LinkDown("closed by the tab"))
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2)
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()


# ------------------------------------------------------------- one tab --


@dataclass
class TabStats:
    present: bool = False  # the page hydrated over /_event
    joined: bool = False  # the tab is in its chat room
    open_error: str = ""
    drops: int = 0
    rejoins: int = 0
    duplicates: int = 0
    arrivals: dict[int, float] = field(default_factory=dict)  # seq -> ms from send to this tab


class Tab:
    """One simulated browser tab of either design."""

    def __init__(self, cfg: dict, index: int, session: Any):
        self.cfg = cfg
        self.facts = PageFacts(**cfg["facts"])
        self.design: str = cfg["design"]
        self.index = index
        self.name = f"tab{index}"
        self.room_index = index % cfg["rooms"]
        self.room = room_name(self.room_index)
        self.ui: str = cfg["ui_urls"][index % len(cfg["ui_urls"])]
        self.session = session
        self.stats = TabStats()
        self.token = str(uuid.uuid4())
        self.path = "/"
        self.reflex: SioLink | None = None
        self.backend: SioLink | None = None
        self.hydrated = asyncio.Event()
        self.in_room = asyncio.Event()
        self.screen_room = ""  # server-state: ChatState.room, the room on screen
        self.screen_members: list[str] = []
        self.seen_keys: set[str] = set()
        self.last_id = ""
        self.tag = f"{TEXT_PREFIX} {cfg['tag']} {self.room_index} "
        self.frame_log: list[str] | None = None

    # ----- what arrives --

    def _record(self, text: str, now_ns: int) -> None:
        if not text.startswith(self.tag):
            return
        seq_s, sent_ns = text[len(self.tag) :].split()
        seq = int(seq_s)
        if seq in self.stats.arrivals:
            self.stats.duplicates += 1
        else:
            self.stats.arrivals[seq] = (now_ns - int(sent_ns)) / 1e6

    def on_backend(self, text: str) -> None:
        """The pages engine's socket: `message` is a delivery; presence/typing need no parse here."""
        if not text.startswith('["message"'):
            return
        now_ns = time.time_ns()
        message = json.loads(text)[1]
        if message.get("room") == self.room:
            self.last_id = message.get("id", self.last_id)
            self._record(message.get("text", ""), now_ns)

    def on_reflex(self, text: str) -> None:
        """Reflex's /_event: state deltas and the frontend events the server asks the tab to run."""
        if not text.startswith('["event"'):
            return
        now_ns = time.time_ns()
        update = json.loads(text)[1]
        delta = update.get("delta") or {}
        root = delta.get(self.facts.hydrate_event.rsplit(".", 1)[0]) or {}
        if root.get("is_hydrated_rx_state_"):
            self.hydrated.set()
        chat = delta.get(self.facts.chat_state or "") or {}
        for line in chat.get("lines_rx_state_") or ():
            key = line.get("key")
            if key not in self.seen_keys:
                self.seen_keys.add(key)
                self._record(line.get("text", ""), now_ns)
        self.screen_room = chat.get("room_rx_state_", self.screen_room)
        self.screen_members = chat.get("members_rx_state_", self.screen_members)
        if self.screen_room == self.room and self.name in self.screen_members:
            self.in_room.set()
        for event in update.get("events") or ():
            task = asyncio.get_running_loop().create_task(self._frontend_event(event))
            BACKGROUND.add(task)
            task.add_done_callback(BACKGROUND.discard)

    async def _frontend_event(self, event: dict) -> None:
        """Run what the page's state.js would run for a server-sent event (applyEvent)."""
        with contextlib.suppress(LinkDown, AttributeError):
            name, payload = event.get("name"), event.get("payload") or {}
            if name == "_redirect":  # client-side navigation, then the new route's on_load_internal
                self.path = payload.get("path", "/")
                await self.reflex.emit("event", self._event(self.facts.on_load_internal))
            elif name == "_call_script" and "timeZone" in payload.get("javascript_code", ""):
                target = re.search(r'ReflexEvent\(\\?"([^"\\]+)\\?"', payload.get("callback", ""))
                if target:
                    await self.reflex.emit("event", self._event(target.group(1), {"tz": "UTC"}))
            elif isinstance(name, str) and not name.startswith("_"):  # a state event chained by a handler
                await self.reflex.emit("event", self._event(name, payload))

    def _event(self, name: str, payload: dict | None = None) -> dict:
        event: dict[str, Any] = {"name": name}
        if payload:
            event["payload"] = payload
        event["router_data"] = {"pathname": self.path, "asPath": self.path}
        return event

    # ----- the tab's life --

    async def _get_page(self) -> None:
        async with self.session.get(f"{self.ui}{self.path}") as response:
            await response.read()
            if response.status != 200:
                raise LinkDown(f"GET {self.path}: {response.status}")

    async def _connect_reflex(self, first: bool) -> None:
        """Reflex's websocket; the hydrate_and_load event (with hashes on the first connect) in CONNECT."""
        ws_url = self.ui.replace("http://", "ws://") + f"/_event/?token={self.token}&EIO=4&transport=websocket"
        link = SioLink(self.session, ws_url, "/_event", self.ui, (self.facts.reflex_version,), self.frame_log)
        link.handler = self.on_reflex
        payload = {"hashes": self.facts.hashes} if first else None
        auth = {"event": self._event(self.facts.hydrate_event, payload), "state_schema": self.facts.state_schema}
        self.hydrated.clear()
        await link.connect(auth, self.cfg["timeout"])
        self.reflex = link
        await asyncio.wait_for(self.hydrated.wait(), self.cfg["timeout"])

    async def _connect_backend(self) -> None:
        """fleetchat.js connect() + reconcile(): auth {name}, then join the room (with since on a rejoin)."""
        url = self.cfg["backend_url"].replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        link = SioLink(self.session, url, "/", self.ui, frame_log=self.frame_log)
        link.handler = self.on_backend
        await link.connect({"name": self.name}, self.cfg["timeout"])
        self.backend = link
        request = {"room": self.room}
        if self.last_id:
            request["since"] = self.last_id
        ack = await link.call("join", request, self.cfg["timeout"])
        if not (isinstance(ack, dict) and ack.get("ok")):
            raise LinkDown(f"join refused: {str(ack)[:200]}")
        for message in ack.get("history") or ():
            self.last_id = message.get("id", self.last_id)
            self._record(message.get("text", ""), time.time_ns())
        self.in_room.set()

    async def _poll_directory(self, stop: asyncio.Event) -> None:
        """fleetchat.js refreshDirectory(): GET /api/rooms every 30 s while connected."""
        url = f"{self.cfg['backend_url']}/api/rooms"
        while not stop.is_set():
            with contextlib.suppress(Exception):
                async with self.session.get(url, headers={"Origin": self.ui}) as response:
                    await response.read()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), DIRECTORY_EVERY)

    async def open(self) -> None:
        await self._get_page()
        if self.design == "pages":
            # The page opens no socket to its own server (frontend/chat.py, no_reflex_socket).
            self.stats.present = True
            await self._connect_backend()
        else:
            await self._connect_reflex(first=True)
            self.stats.present = True
            # the start form's on_submit, as encodeFormDataArgs sends a form (field name and element id)
            form = {"__reflex_form_data__": [["name", self.name], ["name_input", self.name]]}
            await self.reflex.emit("event", self._event(f"{self.facts.chat_state}.pick_name", {"form": form}))
            if self.room != DEFAULT_ROOM:
                # the sidebar's "new room" form, then Leave on the default room (one room per tab, as pages)
                await asyncio.wait_for(self.hydrated_chat(), self.cfg["timeout"])
                form = {"__reflex_form_data__": [["room", self.room], ["new_room_input", self.room]]}
                await self.reflex.emit("event", self._event(f"{self.facts.chat_state}.create_room", {"form": form}))
                await asyncio.wait_for(self.in_room.wait(), self.cfg["timeout"])
                leave = {"room": DEFAULT_ROOM}
                await self.reflex.emit("event", self._event(f"{self.facts.chat_state}.leave_room", leave))
            await asyncio.wait_for(self.in_room.wait(), self.cfg["timeout"])
        self.stats.joined = True

    async def hydrated_chat(self) -> None:
        """Until the /chat page's on_load ran and the listener is in the default room."""
        for _ in range(int(self.cfg["timeout"] * 20)):
            if self.path == "/chat" and self.screen_room == DEFAULT_ROOM and self.name in self.screen_members:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the chat page never showed the default room")

    async def _reconnect(self) -> None:
        if self.design == "server-state" and (self.reflex is None or self.reflex.closed.is_set()):
            if self.reflex is not None:
                await self.reflex.close()
            self.in_room.clear()
            await self._connect_reflex(first=False)  # hydrate_and_load on /chat runs on_load again
            if self.design == "server-state":
                await asyncio.wait_for(self.in_room.wait(), self.cfg["timeout"])
        if self.design == "pages" and (self.backend is None or self.backend.closed.is_set()):
            if self.backend is not None:
                await self.backend.close()
            await self._connect_backend()

    async def life(self, stop: asyncio.Event, opened: asyncio.Event) -> None:
        """Open, then keep the tab's sockets up (bounded reconnects) until stop."""
        poller: asyncio.Task | None = None
        try:
            try:
                await self.open()
            except Exception as exc:  # recorded: the tab did not open
                self.stats.open_error = f"{type(exc).__name__}: {exc}"[:200]
                return
            finally:
                opened.set()
            if self.design == "pages" and self.cfg["directory_poll"]:
                poller = asyncio.create_task(self._poll_directory(stop))
            attempts = 0
            while not stop.is_set() and attempts <= MAX_RECONNECTS:
                waits = [asyncio.create_task(link.closed.wait()) for link in (self.reflex, self.backend) if link]
                waits.append(asyncio.create_task(stop.wait()))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
                if stop.is_set():
                    break
                self.stats.drops += 1
                while not stop.is_set() and attempts < MAX_RECONNECTS:
                    attempts += 1
                    await asyncio.sleep(min(0.25 * 2 ** (attempts - 1), 4.0))
                    try:
                        await self._reconnect()
                    except Exception:  # try again, bounded
                        continue
                    self.stats.rejoins += 1
                    break
                else:
                    break
        finally:
            if poller is not None:
                poller.cancel()
            for link in (self.reflex, self.backend):
                if link is not None:
                    await link.close()


# -------------------------------------------------------------- a worker --


def worker_entry(conn: Connection, cfg: dict) -> None:
    """A load-generator process: its share of the tabs on one asyncio loop."""
    raise_nofile(65536)
    asyncio.run(_worker(conn, cfg))


async def _worker(conn: Connection, cfg: dict) -> None:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        stop = asyncio.Event()
        tabs = [Tab(cfg, i, session) for i in cfg["indices"]]
        lives: list[asyncio.Task] = []
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "open":
                started = time.monotonic()
                gate = asyncio.Semaphore(cfg["open_concurrency"])
                opening = (_open_tab(tab, gate, stop, lives) for tab in tabs)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*opening), arg)
                errors = [t.stats.open_error for t in tabs if t.stats.open_error]
                conn.send(
                    {
                        "present": sum(t.stats.present for t in tabs),
                        "joined": sum(t.stats.joined for t in tabs),
                        "open_s": round(time.monotonic() - started, 2),
                        "errors": errors[:5],
                        "error_count": len(errors),
                    }
                )
            elif command == "expect":
                expected: dict[int, list[int]] = arg["sent"]
                deadline = time.monotonic() + arg["drain_s"]
                while time.monotonic() < deadline and not all(  # noqa: ASYNC110 - bounded poll of many tabs
                    len(t.stats.arrivals) >= len(expected.get(t.room_index, ())) for t in tabs if t.stats.joined
                ):
                    await asyncio.sleep(0.1)
                conn.send(_tally(tabs, expected))
            elif command == "close":
                stop.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*lives, return_exceptions=True), 20)
                conn.send("closed")
                return


async def _open_tab(tab: Tab, gate: asyncio.Semaphore, stop: asyncio.Event, lives: list[asyncio.Task]) -> None:
    """Start a tab's life, at most `gate` tabs opening at once; return once it opened (or failed to)."""
    async with gate:
        opened = asyncio.Event()
        lives.append(asyncio.create_task(tab.life(stop, opened)))
        await opened.wait()


def _tally(tabs: list[Tab], expected: dict[int, list[int]]) -> dict:
    """Deliveries of the messages sent into each tab's room, over the tabs that joined."""
    latencies: list[float] = []
    lost = wanted = dups = 0
    for tab in tabs:
        if not tab.stats.joined:
            continue
        seqs = expected.get(tab.room_index, [])
        wanted += len(seqs)
        for seq in seqs:
            ms = tab.stats.arrivals.get(seq)
            if ms is None:
                lost += 1
            else:
                latencies.append(ms)
        dups += tab.stats.duplicates
    return {
        "wanted": wanted,
        "lost": lost,
        "duplicates": dups,
        "latencies": latencies,
        "dropped": sum(t.stats.drops > 0 for t in tabs),
        "drops": sum(t.stats.drops for t in tabs),
        "rejoined": sum(t.stats.rejoins for t in tabs),
        "tabs_complete": sum(
            1 for t in tabs if t.stats.joined and len(t.stats.arrivals) >= len(expected.get(t.room_index, ()))
        ),
    }


# ---------------------------------------------------------------- measuring --


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime+stime of each pid (clock ticks)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return out


def cpu_percent(before: dict[int, int], after: dict[int, int], seconds: float) -> float:
    """CPU % (100 = one core) between two samples; pids born in between count from zero."""
    ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
    return round(100 * ticks / CLK_TCK / max(seconds, 1e-6), 1)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without float drift
    return ordered[int(rank) - 1]


def room_members(backend_url: str, names: list[str]) -> int:
    """Members the backend counts over the bench's rooms (GET /api/rooms), the sender included."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"{backend_url}/api/rooms", timeout=10) as response:
            rooms = json.loads(response.read())["rooms"]
    except (OSError, TimeoutError):  # a backend busy with thousands of tabs may answer late: ask again
        return -1
    return sum(int(r["members"]) for r in rooms if r["name"] in names)


async def send_messages(
    backend_url: str, origin: str, rooms: list[str], seconds: int, tag: str, timeout: float = 60
) -> tuple[dict[int, list[int]], int]:
    """Sender sockets straight to the backend (one per ROOMS_PER_SENDER rooms, the backend's cap per
    connection): 1 message/s into each room, spread over each second.

    Returns the acked seqs per room index and the count of sends that failed."""
    sent: dict[int, list[int]] = {i: [] for i in range(len(rooms))}
    failed = 0
    async with aiohttp.ClientSession() as session:
        url = backend_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        links: list[SioLink] = []
        for first in range(0, len(rooms), ROOMS_PER_SENDER):
            links.append(SioLink(session, url, "/", origin))
            await links[-1].connect({"name": f"ui-tier-sender-{len(links)}"}, timeout)
            for room in rooms[first : first + ROOMS_PER_SENDER]:
                ack = await links[-1].call("join", {"room": room}, timeout)
                if not (isinstance(ack, dict) and ack.get("ok")):
                    raise LinkDown(f"sender join {room} refused: {str(ack)[:200]}")

        async def one(room_index: int, seq: int) -> None:
            nonlocal failed
            text = f"{TEXT_PREFIX} {tag} {room_index} {seq} {time.time_ns()}"
            request = {"room": rooms[room_index], "text": text, "client_id": f"{tag}-{room_index}-{seq}"}
            try:
                ack = await links[room_index // ROOMS_PER_SENDER].call("message", request, 30)
            except (LinkDown, TimeoutError):
                ack = None
            if isinstance(ack, dict) and ack.get("ok"):
                sent[room_index].append(seq)
            else:
                failed += 1

        start = time.monotonic() + 0.2
        tasks = []
        for seq in range(seconds):
            for room_index in range(len(rooms)):
                delay = start + seq + room_index / len(rooms) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(room_index, seq)))
        await asyncio.gather(*tasks)
        for link in links:
            await link.close()
    return sent, failed


@dataclass
class Case:
    design: str
    tabs: int
    ui_processes: int = 1
    rooms: int = 1
    round: int = 0

    @property
    def key(self) -> str:
        return f"{self.design}|{self.ui_processes}|{self.tabs}|{self.rooms}"


def run_case(case: Case, args: argparse.Namespace, sources: dict[str, Path], scratch: Path) -> dict:
    """One case on a fresh backend and fresh UI process(es)."""
    workdir = scratch / f"{case.design}-{case.tabs}-{case.ui_processes}x-r{case.round}"
    workdir.mkdir()
    ports = [free_port() for _ in range(case.ui_processes)]
    origins = [f"http://{host}:{p}" for p in ports for host in ("127.0.0.1", "localhost")]
    backend = ChatBackend(workdir, origins)
    backend.env.update(BACKEND_ENV)
    apps: list[ReflexApp] = []
    workers: list[tuple[multiprocessing.Process, Connection]] = []
    result: dict[str, Any] = {**asdict(case)}
    try:
        backend.start()
        for i, port in enumerate(ports):
            (workdir / f"ui{i}").mkdir()
            apps.append(ReflexApp(workdir / f"ui{i}", port, backend.url, source=sources[case.design]))
        result["ui_startup_s"] = [round(a.startup_seconds, 1) for a in apps]
        facts = page_facts(apps[0].root)
        ui_urls = [f"http://{HOST}:{p}" for p in ports]
        tag = uuid.uuid4().hex[:8]
        rooms = [room_name(r) for r in range(case.rooms)]
        time.sleep(1)
        rss_before = sum(rss_kb(a.process.pid) for a in apps)
        cfg = {
            "design": case.design,
            "facts": asdict(facts),
            "ui_urls": ui_urls,
            "backend_url": backend.url,
            "rooms": case.rooms,
            "tag": tag,
            "timeout": args.tab_timeout,
            "open_concurrency": args.open_concurrency,
            "directory_poll": not args.no_directory_poll,
        }
        ctx = multiprocessing.get_context("spawn")
        n_workers = max(1, min(args.workers, case.tabs))
        for w in range(n_workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=worker_entry, args=(child, {**cfg, "indices": list(range(w, case.tabs, n_workers))}), daemon=True
            )
            proc.start()
            workers.append((proc, parent))
        open_budget = args.open_timeout + case.tabs / 20
        log(f"{case.key}: opening {case.tabs} tabs ({n_workers} workers, budget {open_budget:.0f}s)")
        for _, pipe in workers:
            pipe.send(("open", open_budget))
        opened = [pipe.recv() for _, pipe in workers]
        result["present"] = sum(o["present"] for o in opened)
        result["joined"] = sum(o["joined"] for o in opened)
        result["open_s"] = max(o["open_s"] for o in opened)
        result["open_errors"] = [e for o in opened for e in o["errors"]][:5]
        result["open_error_count"] = sum(o["error_count"] for o in opened)
        deadline = time.monotonic() + 60
        members = room_members(backend.url, rooms)
        while members < result["joined"] and time.monotonic() < deadline:
            time.sleep(0.5)
            members = room_members(backend.url, rooms)
        result["backend_members"] = members  # -1: GET /api/rooms did not answer within 10 s
        time.sleep(args.settle)  # presence fan-out of the ramp drains
        rss_after = sum(rss_kb(a.process.pid) for a in apps)
        result["ui_rss_before_kb"] = rss_before
        result["ui_rss_after_kb"] = rss_after
        result["ui_rss_kb_per_tab"] = round((rss_after - rss_before) / max(1, result["present"]), 1)
        log(
            f"{case.key}: {result['present']} present, {result['joined']} joined in {result['open_s']}s "
            f"(backend counts {members}); UI RSS {rss_before // 1024} -> {rss_after // 1024} MiB"
        )
        ui_pids = [p for a in apps for p in process_tree(a.process.pid)]
        gen_pids = [os.getpid(), *(proc.pid for proc, _ in workers)]
        backend_pids = process_tree(backend.process.pid)
        t0 = time.monotonic()
        ui0, gen0, be0 = cpu_ticks(ui_pids), cpu_ticks(gen_pids), cpu_ticks(backend_pids)
        sent, failed = asyncio.run(send_messages(backend.url, ui_urls[0], rooms, args.duration, tag, args.tab_timeout))
        for _, pipe in workers:
            pipe.send(("expect", {"sent": sent, "drain_s": args.drain}))
        tallies = [pipe.recv() for _, pipe in workers]
        seconds = time.monotonic() - t0
        ui1, gen1, be1 = cpu_ticks(ui_pids), cpu_ticks(gen_pids), cpu_ticks(backend_pids)
        latencies = [ms for t in tallies for ms in t["latencies"]]
        wanted = sum(t["wanted"] for t in tallies)
        lost = sum(t["lost"] for t in tallies)
        result.update(
            sent=sum(len(v) for v in sent.values()),
            send_failed=failed,
            wanted=wanted,
            delivered=wanted - lost,
            lost=lost,
            delivered_pct=round(100 * (wanted - lost) / wanted, 3) if wanted else None,
            duplicates=sum(t["duplicates"] for t in tallies),
            p50_ms=_round(percentile(latencies, 50)),
            p99_ms=_round(percentile(latencies, 99)),
            max_ms=_round(max(latencies) if latencies else None),
            tabs_complete=sum(t["tabs_complete"] for t in tallies),
            tabs_dropped=sum(t["dropped"] for t in tallies),
            drops=sum(t["drops"] for t in tallies),
            rejoined=sum(t["rejoined"] for t in tallies),
            phase_s=round(seconds, 1),
            ui_cpu_pct=cpu_percent(ui0, ui1, seconds),
            backend_cpu_pct=cpu_percent(be0, be1, seconds),
            loadgen_cpu_pct=cpu_percent(gen0, gen1, seconds),
            loadgen_max_process_cpu_pct=max(cpu_percent({p: gen0.get(p, 0)}, {p: gen1[p]}, seconds) for p in gen1),
        )
        result["collapsed"] = collapsed(result, case)
        log(
            f"{case.key}: delivered {result['delivered_pct']}% (lost {lost}, dup {result['duplicates']}), "
            f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, UI CPU {result['ui_cpu_pct']}%, "
            f"loadgen {result['loadgen_cpu_pct']}%{' COLLAPSED' if result['collapsed'] else ''}"
        )
    except Exception as exc:  # one case failing is a result, not the end of the run
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        result["collapsed"] = True
        log(f"{case.key}: failed: {result['error']}")
    finally:
        for _, pipe in workers:
            with contextlib.suppress(Exception):
                pipe.send(("close", None))
        for proc, pipe in workers:
            with contextlib.suppress(Exception):
                if pipe.poll(25):
                    pipe.recv()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for app in apps:
            app.stop()
        backend.stop()
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def collapsed(result: dict, case: Case) -> bool:
    """A design collapses when it cannot hold the tabs or keep up: then larger steps are skipped."""
    if result.get("error") or result.get("joined", 0) < 0.95 * case.tabs:
        return True
    if result.get("delivered_pct") is None or result["delivered_pct"] < 99:
        return True
    return result.get("p99_ms") is not None and result["p99_ms"] > 5000


# ---------------------------------------------------------------- reporting --


def summarize(runs: list[dict]) -> list[dict]:
    """Median over rounds per case key, in the order the cases first ran."""
    keys: list[str] = []
    for run in runs:
        key = Case(run["design"], run["tabs"], run["ui_processes"], run["rooms"]).key
        if key not in keys:
            keys.append(key)
    out = []
    for key in keys:
        group = [r for r in runs if Case(r["design"], r["tabs"], r["ui_processes"], r["rooms"]).key == key]
        row = {k: group[0][k] for k in ("design", "tabs", "ui_processes", "rooms")}
        row["rounds"] = len(group)
        for metric in (
            "present",
            "joined",
            "delivered_pct",
            "lost",
            "duplicates",
            "p50_ms",
            "p99_ms",
            "ui_cpu_pct",
            "ui_rss_kb_per_tab",
            "backend_cpu_pct",
            "loadgen_cpu_pct",
            "loadgen_max_process_cpu_pct",
            "tabs_dropped",
            "rejoined",
            "open_s",
            "send_failed",
        ):
            values = [r[metric] for r in group if r.get(metric) is not None]
            row[metric] = round(statistics.median(values), 1) if values else None
        row["lost"] = sum(r.get("lost") or 0 for r in group)
        row["collapsed"] = any(r.get("collapsed") for r in group)
        row["errors"] = [r["error"] for r in group if r.get("error")]
        out.append(row)
    return out


def ratios(summary: list[dict]) -> list[dict]:
    """pages / server-state at each tab count both ran (1 UI process)."""
    out = []
    for row in summary:
        if row["design"] != "pages" or row["ui_processes"] != 1:
            continue
        other = next(
            (
                r
                for r in summary
                if r["design"] == "server-state"
                and r["tabs"] == row["tabs"]
                and r["rooms"] == row["rooms"]
                and r["ui_processes"] == 1
            ),
            None,
        )
        if other is None:
            continue

        def ratio(metric: str, a: dict = row, b: dict = other) -> float | None:
            if a.get(metric) is None or not b.get(metric):
                return None
            return round(a[metric] / b[metric], 3)

        out.append(
            {
                "tabs": row["tabs"],
                "rooms": row["rooms"],
                "p50": ratio("p50_ms"),
                "p99": ratio("p99_ms"),
                "ui_cpu": ratio("ui_cpu_pct"),
                "ui_rss_per_tab": ratio("ui_rss_kb_per_tab"),
                "server_state_collapsed": other["collapsed"],
            }
        )
    return out


def scale_out(summary: list[dict]) -> dict | None:
    """pages on 2 UI processes vs 1: do twice the tabs hold at the same p99?"""
    two = [r for r in summary if r["design"] == "pages" and r["ui_processes"] == 2 and r["p99_ms"] is not None]
    if not two:
        return None
    big = max(two, key=lambda r: r["tabs"])
    ones = [
        r
        for r in summary
        if r["design"] == "pages" and r["ui_processes"] == 1 and r["rooms"] == big["rooms"] and r["p99_ms"] is not None
    ]
    if not ones:
        return None
    base = min(ones, key=lambda r: abs(r["tabs"] - big["tabs"] / 2))
    tab_ratio = big["tabs"] / base["tabs"]
    same_p99 = big["p99_ms"] is not None and base["p99_ms"] is not None and big["p99_ms"] <= base["p99_ms"] * 1.25
    return {
        "one_process": {"tabs": base["tabs"], "p99_ms": base["p99_ms"], "ui_cpu_pct": base["ui_cpu_pct"]},
        "two_processes": {"tabs": big["tabs"], "p99_ms": big["p99_ms"], "ui_cpu_pct": big["ui_cpu_pct"]},
        "tab_ratio": round(tab_ratio, 2),
        "p99_within_25pct": same_p99,
        "holds_1_8x": tab_ratio >= 1.8 and same_p99 and big["delivered_pct"] == 100,
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    lines = [
        "| target | UI procs | tabs | rooms | present | joined | delivered % | lost | dup | p50 ms | p99 ms "
        "| UI CPU % | UI RSS KB/tab | backend CPU % | loadgen CPU % (max proc) | dropped / rejoined | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["summary"]:
        note = "COLLAPSED" if row["collapsed"] else ""
        if row.get("send_failed"):
            note = f"{note} {row['send_failed']:.0f} sends failed".strip()
        if row["errors"]:
            note = (note + " " + row["errors"][0][:80]).strip()
        lines.append(
            f"| {row['design']} | {row['ui_processes']} | {row['tabs']} | {row['rooms']} | {fmt(row['present'], 0)} "
            f"| {fmt(row['joined'], 0)} | {fmt(row['delivered_pct'], 2)} | {row['lost']} | {fmt(row['duplicates'], 0)} "
            f"| {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {fmt(row['ui_cpu_pct'])} "
            f"| {fmt(row['ui_rss_kb_per_tab'])} | {fmt(row['backend_cpu_pct'])} "
            f"| {fmt(row['loadgen_cpu_pct'])} ({fmt(row['loadgen_max_process_cpu_pct'])}) "
            f"| {fmt(row['tabs_dropped'], 0)} / {fmt(row['rejoined'], 0)} | {note} |"
        )
    if report["ratios"]:
        lines += ["", "| pages / server-state | tabs | p50 | p99 | UI CPU | UI RSS per tab |"]
        lines += ["|---|---|---|---|---|---|"]
        for r in report["ratios"]:
            flag = " (server-state collapsed)" if r["server_state_collapsed"] else ""
            lines.append(
                f"| ratio{flag} | {r['tabs']} | {fmt(r['p50'], 3)} | {fmt(r['p99'], 3)} | {fmt(r['ui_cpu'], 3)} "
                f"| {fmt(r['ui_rss_per_tab'], 3)} |"
            )
    s = report.get("scale_out")
    if s:
        lines += [
            "",
            f"Scale-out (pages): 2 UI processes held {s['two_processes']['tabs']} tabs at p99 "
            f"{fmt(s['two_processes']['p99_ms'])} ms vs 1 process {s['one_process']['tabs']} tabs at p99 "
            f"{fmt(s['one_process']['p99_ms'])} ms: {s['tab_ratio']}x the tabs, "
            f"{'holds' if s['holds_1_8x'] else 'does NOT hold'} the 1.8x-at-the-same-p99 bar.",
        ]
    p = report["params"]
    lines += [
        "",
        f"{report['date']}; {report['machine']['cpu']}, {report['machine']['cores']} cores; "
        f"{p['duration_s']} s at 1 msg/s per room, {p['workers']} load-generator processes, "
        f"background CPU before the run {report['background_cpu']:.0%}.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------- the browser check --


def check_browser(sources: dict[str, Path], scratch: Path) -> dict:
    """One real Chromium tab per design next to one simulated tab: the /_event frames each sends.

    The frames are normalized to (packet type, event name, route) so tokens and timestamps drop out."""
    import shutil

    from playwright.sync_api import sync_playwright

    from tests.e2e.conftest import CHROMIUM_FLAGS

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no `chromium` on PATH (never `playwright install`)")
    out: dict[str, Any] = {}
    for design in DESIGNS:
        workdir = scratch / f"check-{design}"
        (workdir / "ui").mkdir(parents=True)
        port = free_port()
        backend = ChatBackend(workdir, [f"http://{h}:{port}" for h in ("127.0.0.1", "localhost")])
        backend.env.update(BACKEND_ENV)
        backend.start()
        app = ReflexApp(workdir / "ui", port, backend.url, source=sources[design])
        try:
            ui = f"http://{HOST}:{port}"
            sent: list[str] = []

            def watch(ws: Any, sent: list[str] = sent) -> None:
                ws.on("framesent", lambda payload: sent.append(str(payload)))

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
                page = browser.new_context(base_url=ui).new_page()
                page.on("websocket", watch)
                page.goto("/")
                page.fill("#name-input", "tab0")
                page.click("#name-submit")
                page.wait_for_selector("#conn-badge[data-status=connected]", timeout=30_000)
                page.wait_for_timeout(1500)
                browser.close()
            simulated = asyncio.run(_simulated_frames(design, ui, backend.url, page_facts(app.root)))
            real = [_normalize(f) for f in sent]
            fake = [_normalize(f) for f in simulated]
            out[design] = {"chromium": real, "simulated": fake, "match": real == fake}
            log(f"check {design}: {'MATCH' if real == fake else 'DIFFER'}\n  chromium  {real}\n  simulated {fake}")
        finally:
            app.stop()
            backend.stop()
    return out


def _normalize(frame: str) -> str:
    """`40/_event,{"event":{"name":"x.hydrate_and_load",...}}` -> `40/_event hydrate_and_load /`."""
    match = re.match(r"^(\d+)(/[^,]*,)?(\d*)(.*)$", frame, re.S)
    if not match:
        return frame[:40]
    kind, ns, body = match.group(1), (match.group(2) or "").rstrip(","), match.group(4)
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return f"{kind}{ns} ?"
    if isinstance(data, dict) and "event" in data:
        data = ["event", data["event"]]
    if isinstance(data, list) and data and isinstance(data[0], str):
        name, arg = data[0], data[1] if len(data) > 1 else None
        if name == "event" and isinstance(arg, dict):
            route = (arg.get("router_data") or {}).get("pathname", "")
            return f"{kind}{ns} {arg.get('name', '').rsplit('.', 1)[-1]} {route} {sorted(arg.get('payload') or {})}"
        return f"{kind}{ns} {name} {sorted(arg) if isinstance(arg, dict) else ''}"
    return f"{kind}{ns} {sorted(data) if isinstance(data, dict) else data}"


async def _simulated_frames(design: str, ui: str, backend_url: str, facts: PageFacts) -> list[str]:
    """The frames one simulated tab sends while it opens, and for 1.5 s after."""
    cfg = {
        "design": design,
        "facts": asdict(facts),
        "ui_urls": [ui],
        "backend_url": backend_url,
        "rooms": 1,
        "tag": "check",
        "timeout": 30,
        "directory_poll": False,
    }
    async with aiohttp.ClientSession() as session:
        tab = Tab(cfg, 0, session)
        tab.frame_log = []
        try:
            await tab.open()
            await asyncio.sleep(1.5)
        finally:
            for link in (tab.reflex, tab.backend):
                if link is not None:
                    await link.close()
        return tab.frame_log


# -------------------------------------------------- page loads (the static tier) --

PAGE_STEPS = (0.4, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1)  # offered rates, as fractions of the closed-loop probe
BROWSER_CONNECTIONS = 6  # a browser's connections per origin over HTTP/1.1
LOAD_TIMEOUT = 15.0  # seconds one page load may take before it counts as failed
MAX_IN_FLIGHT = 400  # per load-generator process; beyond it a scheduled load is shed (counted)


class _Assets(HTMLParser):
    """Same-origin URLs a browser fetches while it parses the page: scripts, stylesheets, preloads, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        url = a.get("src") if tag == "script" else a.get("href") if tag == "link" else None
        if tag == "link" and not {"stylesheet", "modulepreload", "preload", "icon"} & set((a.get("rel") or "").split()):
            url = None
        if url and url.startswith("/") and not url.startswith("//") and url not in self.urls:
            self.urls.append(url)


def first_visit(ui: str) -> tuple[list[str], int]:
    """The paths of a first visit of `/` and their bytes: the page, what its HTML references, every
    static import of those modules (vite lists them as modulepreload; checked here) and /favicon.ico."""
    import urllib.request

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"{ui}{path}", timeout=10) as response:
            return response.read()

    page = get("/").decode()
    parser = _Assets()
    parser.feed(page)
    paths = ["/", *parser.urls, *re.findall(r'import\("(/[^"]+)"\)', page)]
    paths.append("/favicon.ico")
    size, i = 0, 0
    while i < len(paths):
        body = get(paths[i])
        size += len(body)
        if paths[i].endswith(".js"):
            base = paths[i].rsplit("/", 1)[0]
            for rel in re.findall(rb'(?:from|import)\s*"(\./[^"]+\.js)"', body):
                path = f"{base}/{rel.decode()[2:]}"
                if path not in paths:
                    paths.append(path)
        i += 1
    return list(dict.fromkeys(paths)), size


def build_static(scratch: Path, source: Path = ROOT) -> Path:
    """`reflex export --frontend-only --no-zip` once, in a copy of the app (as `make fleet` builds it)."""
    from tests.e2e.conftest import tools_env

    app = copy_app(scratch / "ui-build", source)
    env = ui_env({**tools_env(), "CHAT_BACKEND_URL": "/"})
    argv = [ui_python(), "-m", "reflex", "export", "--frontend-only", "--no-zip"]
    with open(scratch / "ui-build.log", "wb") as out:
        code = subprocess.run(argv, cwd=app, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode
    build = app / ".web" / "build" / "client"
    if code != 0 or not (build / "index.html").exists():
        raise RuntimeError(f"reflex export failed ({code}); see {scratch / 'ui-build.log'}")
    return build


def start_static_ui(build: Path, port: int, log_path: Path) -> subprocess.Popen:
    """One UI process as `make fleet` runs it: `hypercorn frontend.serve:app` serving the build."""
    from tests.e2e.conftest import http_get, tools_env, wait_until

    env = ui_env({**tools_env(), "CHAT_UI_BUILD": str(build)})
    argv = [ui_python(), "-m", "hypercorn", "frontend.serve:app", "--bind", f"{HOST}:{port}"]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=build.parents[2], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_until(lambda: http_get(f"http://{HOST}:{port}/")[0] == 200, 60, f"the UI process on {port}", every=0.1)
    return proc


async def _page_load(base: str, paths: list[str]) -> float:
    """One browser's first visit: the page, then its assets over at most 6 kept-alive connections; ms."""
    connector = aiohttp.TCPConnector(limit_per_host=BROWSER_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=LOAD_TIMEOUT)) as s:

        async def get(path: str) -> None:
            async with s.get(base + path) as response:
                await response.read()
                if response.status != 200:
                    raise LinkDown(f"GET {path}: {response.status}")

        started = time.perf_counter()
        await get(paths[0])
        await asyncio.gather(*(get(p) for p in paths[1:]))
        return (time.perf_counter() - started) * 1000


async def _offer_loads(cfg: dict, job: dict) -> dict:
    """Closed loop (`browsers` visiting back to back) or open loop (`rate` loads/s on a fixed schedule)."""
    urls, paths, worker, workers = job["urls"], cfg["paths"], cfg["worker"], cfg["workers"]
    latencies: list[float] = []
    failed = shed = 0
    tasks: list[asyncio.Task] = []

    async def one(n: int) -> None:
        nonlocal failed
        try:
            latencies.append(await _page_load(urls[n % len(urls)], paths))
        except Exception:  # any failure of a load is a failed load
            failed += 1

    started = time.monotonic()
    end = started + job["seconds"]
    if job.get("browsers"):

        async def browser(b: int) -> None:
            n = b
            while time.monotonic() < end:
                await one(n)
                n += job["browsers"]

        await asyncio.gather(*(browser(worker + b * workers) for b in range(job["browsers"] // workers)))
    else:
        interval = workers / job["rate"]
        for i in range(int(job["rate"] * job["seconds"] / workers)):
            delay = started + (i + worker / workers) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks = [t for t in tasks if not t.done()]
            if len(tasks) >= MAX_IN_FLIGHT:
                shed += 1
                continue
            tasks.append(asyncio.create_task(one(i * workers + worker)))
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=LOAD_TIMEOUT + 5)
            for task in pending:
                task.cancel()
            failed += len(pending)
    return {"latencies": latencies, "failed": failed, "shed": shed, "seconds": time.monotonic() - started}


def page_worker_entry(conn: Connection, cfg: dict) -> None:
    """A load-generator process for page loads: runs each job it is sent on one asyncio loop."""

    async def serve() -> None:
        while True:
            command, job = await asyncio.to_thread(conn.recv)
            if command == "close":
                return
            conn.send(await _offer_loads(cfg, job))

    asyncio.run(serve())


def page_step(workers: list, ui_pids: list[int], job: dict) -> dict:
    """One measurement: every worker runs `job`; loads/s, latency, and the CPU of the UI and the load generator."""
    gen_pids = [proc.pid for proc, _ in workers]
    t0 = time.monotonic()
    ui0, gen0 = cpu_ticks(ui_pids), cpu_ticks(gen_pids)
    for _, pipe in workers:
        pipe.send(("run", job))
    parts = [pipe.recv() for _, pipe in workers]
    seconds = time.monotonic() - t0
    ui1, gen1 = cpu_ticks(ui_pids), cpu_ticks(gen_pids)
    latencies = [ms for p in parts for ms in p["latencies"]]
    return {
        "offered_per_s": job.get("rate"),
        "browsers": job.get("browsers"),
        "loads": len(latencies),
        "failed": sum(p["failed"] for p in parts),
        "shed": sum(p["shed"] for p in parts),
        "loads_per_s": round(len(latencies) / max(p["seconds"] for p in parts), 1),
        "p50_ms": _round(percentile(latencies, 50)),
        "p99_ms": _round(percentile(latencies, 99)),
        "ui_cpu_pct": cpu_percent(ui0, ui1, seconds),
        "loadgen_cpu_pct": cpu_percent(gen0, gen1, seconds),
    }


def run_page_loads(args: argparse.Namespace, scratch: Path) -> dict:
    """1 vs 2 static UI processes in one run: closed-loop probe each, then an open-loop ladder, alternating."""
    log("building the page once (reflex export --frontend-only --no-zip)")
    build = build_static(scratch)
    procs: list[subprocess.Popen] = []
    workers: list[tuple[multiprocessing.Process, Connection]] = []
    try:
        ports = [free_port() for _ in range(3)]
        procs = [start_static_ui(build, port, scratch / f"ui-static-{port}.log") for port in ports]
        configs = {  # k UI processes: their base URLs (a browser's loads all go to one) and their pids
            1: {"urls": [f"http://{HOST}:{ports[0]}"], "pids": process_tree(procs[0].pid)},
            2: {
                "urls": [f"http://{HOST}:{p}" for p in ports[1:]],
                "pids": [pid for proc in procs[1:] for pid in process_tree(proc.pid)],
            },
        }
        paths, size = first_visit(configs[1]["urls"][0])
        log(f"a first visit: {len(paths)} requests, {size // 1024} KiB")
        ctx = multiprocessing.get_context("spawn")
        for w in range(args.workers):
            parent, child = ctx.Pipe()
            cfg = {"paths": paths, "worker": w, "workers": args.workers}
            proc = ctx.Process(target=page_worker_entry, args=(child, cfg), daemon=True)
            proc.start()
            workers.append((proc, parent))
        steps: list[dict] = []

        def measure(k: int, **job: Any) -> dict:
            step = {
                "ui_processes": k,
                **job,
                **page_step(workers, configs[k]["pids"], {"urls": configs[k]["urls"], **job}),
            }
            steps.append(step)
            log(
                f"pages static x{k}: {job}: {step['loads_per_s']} loads/s, p50 {step['p50_ms']} ms, "
                f"p99 {step['p99_ms']} ms, failed {step['failed']}, UI CPU {step['ui_cpu_pct']}%, "
                f"loadgen {step['loadgen_cpu_pct']}%"
            )
            return step

        for k in (1, 2):  # warm both (first requests, the page cache), then left out
            measure(k, browsers=args.workers, seconds=1, warmup=True)
        probe = {}
        for k in (1, 2):  # closed loop: what each sustains flat out, to place the open-loop ladder
            browsers = args.workers * max(1, args.page_browsers * k // args.workers)
            probe[k] = measure(k, browsers=browsers, seconds=args.page_seconds)["loads_per_s"]
        fractions = PAGE_STEPS[::3] if args.smoke else PAGE_STEPS
        for i, fraction in enumerate(fractions):
            for k in (1, 2) if i % 2 == 0 else (2, 1):
                measure(k, rate=max(1.0, round(fraction * probe[k], 1)), seconds=args.page_seconds, fraction=fraction)
    finally:
        for _, pipe in workers:
            with contextlib.suppress(Exception):
                pipe.send(("close", None))
        for proc, _ in workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        from tests.e2e.conftest import stop_process_group

        for proc in procs:
            stop_process_group(proc)
    return page_summary(steps, probe, paths, size, args.page_p99_ms)


def page_summary(steps: list[dict], probe: dict, paths: list[str], size: int, bound_ms: float) -> dict:
    """The highest offered rate each UI process count sustained (nothing failed or shed, p99 within the bound)."""
    best: dict[int, dict | None] = {}
    for k in (1, 2):
        held = [
            s
            for s in steps
            if s["ui_processes"] == k
            and s["offered_per_s"]
            and not s["failed"]
            and not s["shed"]
            and s["p99_ms"] is not None
            and s["p99_ms"] <= bound_ms
        ]
        best[k] = max(held, key=lambda s: s["offered_per_s"], default=None)
    ratio = None
    if best[1] and best[2]:
        ratio = round(best[2]["offered_per_s"] / best[1]["offered_per_s"], 2)
    return {
        "requests_per_load": len(paths),
        "bytes_per_load": size,
        "paths": paths,
        "p99_bound_ms": bound_ms,
        "probe_loads_per_s": probe,
        "steps": steps,
        "sustained": best,
        "ratio_2_over_1": ratio,
        "probe_ratio_2_over_1": round(probe[2] / probe[1], 2) if probe.get(1) else None,
    }


def page_markdown(report: dict) -> str:
    r = report["page_loads"]
    lines = [
        "| UI procs | load | offered loads/s | loads/s | p50 ms | p99 ms | failed / shed | UI CPU % | loadgen CPU % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in r["steps"]:
        if s.get("warmup"):
            continue
        load = f"closed, {s['browsers']} browsers" if s["browsers"] else f"open, {s['fraction']:.0%} of probe"
        lines.append(
            f"| {s['ui_processes']} | {load} | {fmt(s['offered_per_s'])} | {fmt(s['loads_per_s'])} "
            f"| {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {s['failed']} / {s['shed']} | {fmt(s['ui_cpu_pct'])} "
            f"| {fmt(s['loadgen_cpu_pct'])} |"
        )
    held = " vs ".join(
        f"{k} process{'es' * (k > 1)} {fmt(b['offered_per_s'])} loads/s (p99 {fmt(b['p99_ms'])} ms)"
        if b
        else f"{k} process{'es' * (k > 1)} none"
        for k, b in r["sustained"].items()
    )
    lines += [
        "",
        f"Sustained at p99 <= {fmt(r['p99_bound_ms'], 0)} ms with nothing failed: {held}; "
        f"ratio {fmt(r['ratio_2_over_1'], 2)}x (closed-loop probe {fmt(r['probe_ratio_2_over_1'], 2)}x). "
        f"A first visit = {r['requests_per_load']} requests, {r['bytes_per_load'] // 1024} KiB.",
        "",
        f"{report['date']}; {report['machine']['cpu']}, {report['machine']['cores']} cores; "
        f"{report['params']['page_seconds']} s per step, {report['params']['workers']} load-generator processes, "
        f"background CPU before the run {report['background_cpu']:.0%}.",
    ]
    return "\n".join(lines)


def write_page_loads(result: dict, args: argparse.Namespace, started: dt.datetime, background: float) -> int:
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    report = {
        "scenario": "ui_tier_page_loads",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**host_info(), "hypercorn": py_version("hypercorn"), "starlette": ui_package_version("starlette")},
        "background_cpu": background,
        "params": {"page_seconds": args.page_seconds, "workers": args.workers, "page_browsers": args.page_browsers},
        "page_loads": result,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = page_markdown(report)
    (args.out_dir / f"ui-pages-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"ui-pages-{stamp}.md").write_text(table + "\n")
    print(table)
    log(f"wrote {args.out_dir / f'ui-pages-{stamp}.json'} and .md")
    return 0 if not any(s["failed"] for s in result["steps"] if s.get("browsers")) else 1


# ---------------------------------------------------------------------- main --


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ui_tier", description="Scenario (e): the Reflex UI tier under many tabs, two designs."
    )
    parser.add_argument("--targets", default=",".join(DESIGNS), help="comma-separated: pages,server-state")
    parser.add_argument("--tabs", default="100,500,2000", help="the tab ladder (default 100,500,2000)")
    parser.add_argument("--rooms", type=int, default=1, help="rooms the tabs spread over, 1 msg/s each (default 1)")
    parser.add_argument("--duration", type=int, default=30, help="seconds of messages (default 30)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; targets alternate within and across")
    parser.add_argument("--server-state-max", type=int, default=500, help="largest tab count for server-state")
    parser.add_argument(
        "--ui-processes", default="1", help="UI process counts for pages, e.g. 1,2 (2 = two `reflex run`, tabs split)"
    )
    parser.add_argument(
        "--scale-tabs",
        type=int,
        default=1000,
        help="with --ui-processes 1,2: pages on 1 process at this many tabs and on 2 at twice as many",
    )
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--open-concurrency", type=int, default=25, help="tabs opening at once per worker")
    parser.add_argument("--open-timeout", type=float, default=60, help="seconds (plus tabs/20) for the tabs to open")
    parser.add_argument("--tab-timeout", type=float, default=60, help="seconds one step of opening a tab may take")
    parser.add_argument("--settle", type=float, default=3, help="seconds after opening before measuring")
    parser.add_argument("--drain", type=float, default=15, help="seconds after the last send for stragglers")
    parser.add_argument("--no-directory-poll", action="store_true", help="pages tabs skip GET /api/rooms every 30 s")
    parser.add_argument(
        "--page-loads",
        action="store_true",
        help="instead of tabs: page loads/s that 1 vs 2 `hypercorn frontend.serve:app` processes sustain",
    )
    parser.add_argument("--page-seconds", type=int, default=10, help="seconds per page-load step (default 10)")
    parser.add_argument("--page-p99-ms", type=float, default=500, help="the p99 page-load bound (default 500 ms)")
    parser.add_argument("--page-browsers", type=int, default=8, help="closed-loop probe: browsers per UI process")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="5 tabs, 3 s, both targets, 1 UI process")
    parser.add_argument("--check-browser", action="store_true", help="compare a simulated tab's frames with Chromium's")
    args = parser.parse_args(argv)
    if args.smoke:
        args.tabs, args.duration, args.rounds, args.ui_processes, args.drain, args.settle = "5", 3, 1, "1", 10, 1
        args.page_seconds = 2
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if any(t not in DESIGNS for t in args.targets):
        parser.error(f"targets are {DESIGNS}")
    args.tabs = [int(t) for t in str(args.tabs).split(",") if t.strip()]
    args.ui_processes = [int(k) for k in str(args.ui_processes).split(",") if k.strip()]
    if not args.tabs or min(args.tabs) < 1 or args.duration < 1 or args.rooms < 1 or args.rounds < 1:
        parser.error("tabs, duration, rooms and rounds must be positive")
    if any(k not in (1, 2) for k in args.ui_processes):
        parser.error("--ui-processes takes 1 and/or 2")
    return args


def plan(args: argparse.Namespace, rnd: int) -> list[Case]:
    """This round's cases: per tab count the targets alternate (order flips per step and per round)."""
    cases: list[Case] = []
    for i, tabs in enumerate(args.tabs):
        order = list(args.targets) if (i + rnd) % 2 == 0 else list(reversed(args.targets))
        for design in order:
            if design == "server-state" and tabs > args.server_state_max:
                continue
            cases.append(Case(design, tabs, 1, args.rooms, rnd))
    if 2 in args.ui_processes and "pages" in args.targets and args.scale_tabs:
        if args.scale_tabs not in args.tabs:
            cases.append(Case("pages", args.scale_tabs, 1, args.rooms, rnd))
        cases.append(Case("pages", 2 * args.scale_tabs, 2, args.rooms, rnd))
    return cases


def main(argv: list[str] | None = None) -> int:
    from bench.run import cpu_busy

    args = parse_args(argv)
    nofile = raise_nofile(65536)
    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="fleetchat-ui-tier-") as tmp:
        scratch = Path(tmp)
        sources = {"pages": ROOT, "server-state": export_old_design(scratch / "server-state-src")}
        if args.check_browser:
            check = check_browser(sources, scratch)
            return 0 if all(c["match"] for c in check.values()) else 1
        background = cpu_busy(2.0)
        log(f"open-file limit {nofile}; background CPU {background:.0%}")
        if args.page_loads:
            return write_page_loads(run_page_loads(args, scratch), args, started, background)
        runs: list[dict] = []
        collapsed_at: dict[str, int] = {}
        for rnd in range(args.rounds):
            for case in plan(args, rnd):
                if case.design in collapsed_at and case.tabs > collapsed_at[case.design] and case.ui_processes == 1:
                    log(f"{case.key}: skipped ({case.design} collapsed at {collapsed_at[case.design]} tabs)")
                    runs.append({**asdict(case), "skipped": f"collapsed at {collapsed_at[case.design]} tabs"})
                    continue
                result = run_case(case, args, sources, scratch)
                runs.append(result)
                if result.get("collapsed") and case.design == "server-state":
                    collapsed_at[case.design] = min(collapsed_at.get(case.design, case.tabs), case.tabs)
    measured = [r for r in runs if "skipped" not in r]
    summary = summarize(measured)
    report = {
        "scenario": "ui_tier",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {
            **host_info(),
            "reflex": ui_package_version("reflex"),
            "aiohttp": py_version("aiohttp"),
            "python_socketio": py_version("python-socketio"),
            "hypercorn": py_version("hypercorn"),
        },
        "background_cpu": background,
        "params": {
            "targets": args.targets,
            "tabs": args.tabs,
            "rooms": args.rooms,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "server_state_max": args.server_state_max,
            "ui_processes": args.ui_processes,
            "scale_tabs": args.scale_tabs,
            "workers": args.workers,
            "directory_poll": not args.no_directory_poll,
            "backend_env": BACKEND_ENV,
            "server_state_commit": OLD_COMMIT,
            "smoke": args.smoke,
        },
        "runs": [{k: v for k, v in r.items() if k != "latencies"} for r in runs],
        "summary": summary,
        "ratios": ratios(summary),
        "scale_out": scale_out(summary),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    (args.out_dir / f"ui-tier-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"ui-tier-{stamp}.md").write_text(table + "\n")
    print(table)
    log(f"wrote {args.out_dir / f'ui-tier-{stamp}.json'} and .md")
    pages = [r for r in measured if r["design"] == "pages"]
    lost_pages = [r for r in pages if r.get("error") or r.get("lost") or r.get("send_failed") or not r.get("wanted")]
    if lost_pages:
        log(f"{len(lost_pages)} pages case(s) lost messages or failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
