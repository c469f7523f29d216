"""Property-based fuzzing of every Socket.IO event against a real backend.

Each surface (join, leave, message, typing, history, unknown events, connect
auth) gets ``FUZZ_EXAMPLES`` (2,000 by default) payloads of every JSON shape
and size, sent from one long-lived connection. Whatever arrives: the sender
gets an error ack and stays connected, nothing invalid reaches a well-behaved
observer, no one else is disconnected, the backend logs no exception, and a
well-behaved client keeps working afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
import websockets
from hypothesis import assume, given
from hypothesis import strategies as st

from backend.auth import mint
from tests.security.fuzzing import (
    ERROR_CODES,
    PAYLOADS,
    LoopThread,
    any_text,
    args_for,
    fuzz_settings,
    invalid_broadcasts,
    json_values,
    near,
)
from tests.security.helpers import SECRET, examples, log_problems, record
from tests.support import Backend

pytestmark = [pytest.mark.xdist_group("fuzz"), pytest.mark.timeout(1200)]

PAYLOAD_LIMIT = 65_536
"""A packet cap below the default (1 MiB), so the fuzzer's texts of up to 70 KB cross it."""
ENV = {
    "CHAT_RATE": "1000000",
    "CHAT_RATE_BURST": "1000000",
    "CHAT_CONNECTS_PER_MINUTE": "0",
    "CHAT_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT),
}
OBSERVED_ROOMS = ("fz-a", "fz-b", "general")
CASES: Counter[str] = Counter()


class Arena:
    """A backend, the fuzzing client and two well-behaved ones, on one loop."""

    def __init__(self, mode: str, redis_url: str | None = None) -> None:
        self.mode = mode
        env = {**ENV, "REDIS_URL": redis_url} if redis_url else ENV
        self.backend = Backend(env=env).start()
        self.secured = Backend(env={**env, "CHAT_AUTH_SECRET": SECRET}).start()
        CASES.clear()  # counts are per arena
        self.lt = LoopThread()
        self.observed: list[tuple[str, Any]] = []
        self.disconnects: Counter[str] = Counter()
        self.accepted: set[tuple[str, str]] = set()  # (room, id) of messages acked to the fuzzer
        self.fuzzer: socketio.AsyncClient  # connected (and reconnected) by _fuzzer_in
        self.oversized = 0  # packets over CHAT_MAX_PAYLOAD_BYTES: the server drops the fuzzer, which comes back
        self.observer = self._client("observer", record=True)
        self.bystander = self._client("bystander", record=False)
        self.lt.run(self._setup())

    def cases(self, default: int) -> int:
        """Examples per surface: a quarter in fleet mode, whose handlers are the
        embedded ones over another store (each case costs Redis round trips)."""
        return default if self.mode == "embedded" else default // 4

    def _client(self, name: str, record: bool) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=False)
        sio.on("disconnect", lambda *_: self.disconnects.update([name]))
        if record:
            sio.on("*", lambda event, data=None: self.observed.append((event, data)))
        return sio

    async def _setup(self) -> None:
        for name, sio in (("observer", self.observer), ("bystander", self.bystander)):
            await sio.connect(self.backend.url, auth={"name": name}, transports=["websocket"], wait_timeout=10)
        for room in OBSERVED_ROOMS:
            assert (await self.observer.call("join", {"room": room}))["ok"]
        assert (await self.bystander.call("join", {"room": "fz-a"}))["ok"]
        await self._fuzzer_in()

    async def _fuzzer_in(self) -> None:
        self.fuzzer = socketio.AsyncClient(reconnection=False)
        await self.fuzzer.connect(self.backend.url, auth={"name": "fuzzer"}, transports=["websocket"], wait_timeout=10)
        for room in OBSERVED_ROOMS:
            assert (await self.fuzzer.call("join", {"room": room}))["ok"]

    def emit(self, event: str, args: tuple[Any, ...]) -> Any:
        # What python-socketio's client will write: "42<ack id>" and compact stdlib json
        # with ASCII escapes. The server counts the Engine.IO packet, "4" included.
        body = len(json.dumps([event, *args], separators=(",", ":")))
        # Within an ack id's digits of the limit either outcome is right: skip those.
        assume(not body + 2 <= PAYLOAD_LIMIT < body + 8)
        if body + 8 <= PAYLOAD_LIMIT:
            try:
                return self.lt.run(self.fuzzer.call(event, args, timeout=10), timeout=15)
            except (socketio.exceptions.SocketIOError, TimeoutError) as exc:
                raise AssertionError(f"{event} {args!r:.300} got no ack: {exc!r}") from None
        # Over the packet limit: the server drops the sender (and only it), which comes back.
        self.lt.run(self._oversized(event, args))
        return None

    async def _oversized(self, event: str, args: tuple[Any, ...]) -> None:
        await self.fuzzer.emit(event, args)
        for _ in range(250):
            if not self.fuzzer.connected:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"a {event} packet over the limit did not drop its sender")
        self.oversized += 1
        await self._fuzzer_in()

    def close(self) -> None:
        async def down() -> None:
            for sio in (self.fuzzer, self.observer, self.bystander):
                await sio.disconnect()

        self.lt.run(down())
        self.lt.stop()
        self.backend.kill()
        self.secured.kill()


@pytest.fixture(scope="module", params=["embedded", "fleet"])
def arena(request: pytest.FixtureRequest) -> Iterator[Arena]:
    """The same fuzzing against one embedded backend, then against one in fleet
    mode (Redis store, Lua append, Redis presence and pub/sub)."""
    redis_url = request.getfixturevalue("redis_server").url if request.param == "fleet" else None
    a = Arena(request.param, redis_url)
    yield a
    a.close()


def check_ack(event: str, args: tuple[Any, ...], ack: Any, arena: Arena) -> None:
    if ack is None:  # an oversized packet (see Arena.emit)
        return
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if ack["ok"]:
        if event == "message":
            arena.accepted.add((args[0]["room"].strip().lower(), ack["id"]))
        return
    assert ack["error"] in ERROR_CODES and isinstance(ack["detail"], str) and ack["detail"], ack


def check_arena(arena: Arena) -> None:
    assert not arena.disconnects, f"disconnected: {dict(arena.disconnects)}"
    assert arena.fuzzer.connected and arena.observer.connected and arena.bystander.connected
    users = {"anon:fuzzer", "anon:bystander"}
    problems = invalid_broadcasts(list(arena.observed), users)
    assert not problems, problems[:5]
    problems = log_problems(arena.backend.log()) + log_problems(arena.secured.log())
    assert not problems, problems[:5]


def still_works(arena: Arena) -> None:
    """A fresh client connects and joins; a bystander's message reaches it and
    the observer; every message acked to the fuzzer so far reached the observer once."""

    async def check() -> None:
        fresh = socketio.AsyncClient(reconnection=False)
        got: list[dict[str, Any]] = []
        fresh.on("message", got.append)
        await fresh.connect(arena.backend.url, auth={"name": "fresh"}, transports=["websocket"], wait_timeout=10)
        assert (await fresh.call("join", {"room": "fz-a"}))["ok"]
        cid = "end-" + uuid.uuid4().hex
        ack = await arena.bystander.call("message", {"room": "fz-a", "text": "after the storm", "client_id": cid})
        assert ack["ok"], ack
        for _ in range(250):
            if any(m["id"] == ack["id"] for m in got) and any(
                e == "message" and d.get("id") == ack["id"] and d["room"] == "fz-a" for e, d in arena.observed
            ):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the bystander's message did not arrive")
        await fresh.disconnect()

    arena.lt.run(check())
    seen = [(d["room"], d["id"]) for e, d in arena.observed if e == "message"]
    assert arena.accepted <= set(seen), arena.accepted - set(seen)
    assert len(seen) == len(set(seen))


def finish(arena: Arena, label: str, started: float, before: tuple[int, int], **more: Any) -> None:
    still_works(arena)
    check_arena(arena)
    record(
        f"fuzz-{label}" + ("-fleet" if arena.mode == "fleet" else ""),
        {
            "cases": CASES[label],
            "seconds": round(time.monotonic() - started, 1),
            "fuzzer_messages_accepted": len(arena.accepted) - before[0],
            "oversized_packets_dropped": arena.oversized - before[1],
            "invalid_broadcasts": 0,
            "disconnects_of_others": 0,
            **more,
        },
    )


def fuzz_event(arena: Arena, event: str, strategy: st.SearchStrategy[tuple[Any, ...]]) -> None:
    started = time.monotonic()
    before = (len(arena.accepted), arena.oversized)

    @fuzz_settings(arena.cases(2000))
    @given(args=strategy)
    def case(args: tuple[Any, ...]) -> None:
        CASES[event] += 1
        check_ack(event, args, arena.emit(event, args), arena)

    case()
    assert CASES[event] >= examples(arena.cases(2000))
    if event == "message":
        assert len(arena.accepted) > before[0], "no fuzzed message was valid: the strategy is off"
    finish(arena, event, started, before)


@pytest.mark.parametrize("event", sorted(PAYLOADS))
def test_fuzz_each_event(arena, event):
    fuzz_event(arena, event, args_for(event))
    if event in ("join", "leave"):  # whatever the fuzzer did, put it back where the others can see it
        for room in OBSERVED_ROOMS:
            arena.lt.run(arena.fuzzer.call("join", {"room": room}))


unknown_names = st.sampled_from(
    ["connect", "disconnect", "connect_error", "*", "Message", "join ", "__proto__", "", "message\x00"]
) | any_text.filter(lambda n: n not in PAYLOADS)


def test_fuzz_unknown_and_reserved_events(arena):
    fuzz_event(arena, "unknown", st.tuples(unknown_names, args_for("unknown")).map(lambda t: t))


def test_fuzz_unknown_and_reserved_events_do_not_touch_state(arena):
    # After "connect"/"disconnect" events from the client, the server still knows it.
    for room in OBSERVED_ROOMS:
        ack = arena.lt.run(arena.fuzzer.call("join", {"room": room}))
        assert ack["ok"] and {"id": "anon:fuzzer", "name": "fuzzer", "guest": True} in ack["members"]
    ack = arena.lt.run(arena.fuzzer.call("message", {"room": "fz-a", "text": "state ok", "client_id": "state-ok"}))
    assert ack["ok"], ack
    arena.accepted.add(("fz-a", ack["id"]))


# -- connect auth, over a raw Socket.IO session: one WebSocket, many CONNECTs --------

guest_names = st.text(st.characters(categories=["L", "N", "P"]) | st.just(" "), min_size=1, max_size=32).filter(
    str.strip
)
"""Names a guest may take (printable, 1-32 characters): without a branch of these, a seed
could draw 500 payloads and none a valid one (seen in CI), and "connected" never showed."""

auth_payloads = st.one_of(
    st.fixed_dictionaries({"name": guest_names}).map(lambda v: json.dumps(v)),
    json_values.map(lambda v: json.dumps(v)),
    near({"name": any_text | json_values, "token": any_text | json_values}).map(lambda v: json.dumps(v)),
    any_text,  # not even JSON
)


class RawSession:
    """An Engine.IO WebSocket session on which CONNECT packets are tried one after another."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        self.ws: Any = None

    async def open(self) -> None:
        # No WebSocket keepalive: its pings draw from the ``random`` module in the loop thread
        # while hypothesis draws in the test's (a HypothesisDeprecationWarning, seen with some
        # seeds); Engine.IO's own ping ("2", answered below) keeps the session alive.
        self.ws = await websockets.connect(self.url, max_size=None, ping_interval=None)
        opening = await asyncio.wait_for(self.ws.recv(), 5)
        assert opening.startswith("0{"), opening

    async def drop(self) -> None:
        """Forget a session the server ended, closing its socket (not left to the collector)."""
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()

    async def try_auth(self, raw: str) -> str:
        if self.ws is None:
            await self.open()
        # as bytes in a text frame: a lone surrogate is sent as the invalid UTF-8 a hostile
        # client could send (websockets would refuse to encode it as text)
        await self.ws.send(("40" + raw).encode("utf-8", "surrogatepass"), text=True)
        for _ in range(20):
            frame = await asyncio.wait_for(self.ws.recv(), 5)
            if frame == "2":
                await self.ws.send("3")
            elif frame.startswith("40"):
                await self.ws.send("41")
                return "connected"
            elif frame.startswith("44/"):  # another namespace: python-socketio refuses it
                assert frame.endswith('"Unable to connect"'), frame
                return "refused_namespace"
            elif frame.startswith("44"):
                data = json.loads(frame[2:])
                assert isinstance(data.get("message"), str) and data["message"], frame
                assert data["data"]["error"] in ("unauthorized", "bad_request"), frame
                return "refused"
        raise AssertionError("no answer to CONNECT")


def fuzz_connect(arena: Arena, target: Backend, label: str, strategy: st.SearchStrategy[str], n: int) -> Counter:
    session = RawSession(target.url)
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    before = (len(arena.accepted), arena.oversized)

    @fuzz_settings(n)
    @given(raw=strategy)
    def case(raw: str) -> None:
        CASES[label] += 1
        try:
            outcomes[arena.lt.run(session.try_auth(raw))] += 1
        except TimeoutError:
            raise AssertionError(f"no answer to CONNECT {raw!r:.300}") from None
        except websockets.exceptions.ConnectionClosed:
            # Not JSON at all is a protocol error: the server may end that session.
            outcomes["session_closed"] += 1
            arena.lt.run(session.drop())

    case()
    arena.lt.run(session.drop())
    assert CASES[label] >= n
    finish(arena, label, started, before, outcomes=dict(outcomes))
    return outcomes


def test_fuzz_connect_auth_anonymous(arena):
    outcomes = fuzz_connect(arena, arena.backend, "connect", auth_payloads, examples(arena.cases(2000)))
    assert outcomes["refused"] > 0 and outcomes["connected"] > 0, outcomes


def token_payloads() -> st.SearchStrategy[str]:
    good = mint(SECRET, "tok-user", "tok-1", 600)
    header, body, sig = good.split(".")
    mangled = st.sampled_from(
        [good, good[:-2], f"{header}.{body}.", f"{header}..{sig}", "e30.e30.", good + "x", good.replace(".", "", 1)]
    )
    tokens = mangled | any_text | json_values
    return near({"token": tokens, "name": any_text | json_values}).map(lambda v: json.dumps(v))


def test_fuzz_connect_auth_with_tokens_required(arena):
    outcomes = fuzz_connect(arena, arena.secured, "connect_token", token_payloads(), examples(arena.cases(2000)) // 2)
    assert outcomes["refused"] > 0, outcomes


def test_well_behaved_clients_keep_working_afterwards(arena):
    still_works(arena)
    check_arena(arena)
