"""The instance keeps serving through slow and half-open connections,
connections that never finish a handshake, and malformed Engine.IO /
Socket.IO packets on a raw WebSocket (hand-picked and fuzzed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections import Counter
from typing import Any

import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st

from tests.security.fuzzing import LoopThread, fuzz_settings
from tests.security.helpers import examples, log_problems, metric, record
from tests.support import ChatClient, async_wait_for, http_get

pytestmark = pytest.mark.timeout(600)


def eio_url(url: str) -> str:
    return url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"


async def serving(url: str, room: str | None = None) -> None:
    """A well-behaved client connects, joins, sends and gets its message; HTTP answers."""
    room = room or "raw-" + uuid.uuid4().hex[:8]
    c = ChatClient(url, "steady-" + uuid.uuid4().hex[:6])
    await c.connect()
    try:
        await c.join(room)
        assert (await c.send(room, "still serving"))["ok"]
        await async_wait_for(lambda: "still serving" in c.texts(room), timeout=10, what="echo")
    finally:
        await c.close()
    status, _ = await asyncio.to_thread(http_get, url + "/healthz", 5)
    assert status == 200


async def test_connections_that_never_finish_a_handshake_do_not_stop_service(backends):
    backend = backends()
    port = backend.port
    silent_tcp, half_http, no_namespace = [], [], []
    try:
        for _ in range(50):  # TCP only, not a byte sent
            silent_tcp.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        for _ in range(50):  # an HTTP request line, then nothing (slowloris)
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            half_http.append(s)
        for _ in range(50):  # Engine.IO open, never the Socket.IO CONNECT
            ws = await websockets.connect(eio_url(backend.url))
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")
            no_namespace.append(ws)
        await serving(backend.url)
        # Drip a byte at a time into the slow requests while others are served.
        for _ in range(3):
            for s in half_http:
                with contextlib.suppress(OSError):
                    s.sendall(b"x")
            await serving(backend.url)
            await asyncio.sleep(0.2)
    finally:
        for s in silent_tcp + half_http:
            s.close()
        for ws in no_namespace:
            await ws.close()
    await serving(backend.url)
    assert not log_problems(backend.log()), log_problems(backend.log())[:5]


async def test_a_reader_that_stops_reading_does_not_hold_up_the_room(backends):
    backend = backends(env={"CHAT_RATE": "100000", "CHAT_RATE_BURST": "100000"})
    room = "stall-" + uuid.uuid4().hex[:8]
    # A raw Socket.IO client that joins the room and then never reads again:
    # its TCP window fills and the server's writes to it stop.
    async with websockets.connect(eio_url(backend.url)) as ws:
        assert (await ws.recv()).startswith("0{")
        await ws.send('40{"name":"stalled"}')
        assert (await ws.recv()).startswith("40")
        await ws.send('420["join",' + json.dumps({"room": room}) + "]")
        for _ in range(10):  # a presence event may come before the ack
            if (await asyncio.wait_for(ws.recv(), 5)).startswith("430"):
                break
        else:
            raise AssertionError("no join ack")
        ws.transport.pause_reading()  # stop reading: the kernel buffers fill, then the server's sends block
        sender = ChatClient(backend.url, "sender")
        reader = ChatClient(backend.url, "reader")
        await sender.connect()
        await reader.connect()
        try:
            await sender.join(room)
            await reader.join(room)
            text = "y" * 3990
            n = 3000  # ~12 MB past the stalled reader: more than its socket buffers hold
            acks = [await sender.send(room, f"{i:04d} {text}") for i in range(n)]
            assert all(a["ok"] for a in acks)
            await async_wait_for(lambda: len(reader.messages(room)) == n, timeout=60, what="the reader gets all")
            assert [m["seq"] for m in reader.messages(room)] == list(range(1, n + 1))
            await serving(backend.url)
        finally:
            await sender.close()
            await reader.close()
    assert not log_problems(backend.log()), log_problems(backend.log())[:5]


MALFORMED: list[str | bytes] = [
    "",
    "9",
    "7",
    "4",
    "42",
    "42[",
    '42["message"',
    '42{"room":"general"}',
    "42[]",
    "42[1]",
    "42[null]",
    '42[{"a":1}]',
    '42["join"]',
    "4" + "9" * 300,
    "421" + "0" * 120 + '["join",{"room":"general"}]',
    "45-",
    '451-["message",{"_placeholder":true,"num":0}]',
    '452-["message",{"_placeholder":true,"num":7}]',
    "43",
    "431[]",
    "44",
    '44{"message":"x"}',
    "46",
    "40/nonexistent,",
    "40/admin,{}",
    "41/nonexistent,",
    '42/nonexistent,["join",{}]',
    "40",
    '40{"name":"again"}',
    "41",
    "5",
    "6",
    "0",
    "1",
    "3",
    "2probe",
    "42" + "[" * 5000,
    "42" + "[" * 100_000,
    '42["message",' + "{" * 2000,
    '42["message","' + "\\ud800" * 100 + '"]',
    '42["message",NaN]',
    '42["message",1e999999]',
    '42["message",-0]',
    '42["\\u0000"]',
    b"\x00\x01\x02",
    b"\xff\xfe",
    b"4" + b"\x80" * 10,
    "4" + "2" * 60_000,
]


async def probe(url: str, frame: str | bytes, connected: bool, wait: float = 0.2) -> str:
    """Send one frame on a fresh session (after the Socket.IO CONNECT when
    ``connected``); what happened: answered, closed by the server, or silence."""
    async with websockets.connect(eio_url(url), max_size=None) as ws:
        assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")
        if connected:
            await ws.send('40{"name":"raw"}')
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("40")
        try:
            await ws.send(frame)
            reply = await asyncio.wait_for(ws.recv(), wait)
            return "closed" if reply == "1" else "answered"
        except websockets.exceptions.ConnectionClosed:
            return "closed"
        except TimeoutError:
            return "silence"


@pytest.mark.parametrize("connected", [False, True], ids=["before-connect", "after-connect"])
async def test_malformed_packets_on_a_raw_websocket_leave_the_instance_serving(backends, connected):
    backend = backends(env={"CHAT_CONNECTS_PER_MINUTE": "0"})
    outcomes: Counter[str] = Counter()
    for frame in MALFORMED:
        outcomes[await probe(backend.url, frame, connected)] += 1
    await serving(backend.url)
    assert not log_problems(backend.log()), log_problems(backend.log())[:5]
    record(f"raw-malformed-{'after' if connected else 'before'}-connect", {"frames": len(MALFORMED), **outcomes})


def test_fuzzed_raw_frames_leave_the_instance_serving(backends):
    backend = backends(env={"CHAT_CONNECTS_PER_MINUTE": "0"})
    lt = LoopThread()
    outcomes: Counter[str] = Counter()
    eio_types = st.sampled_from(["", "0", "1", "2", "3", "4", "5", "6", "40", "41", "42", "43", "44", "45", "46"])
    junk = st.text(max_size=200) | st.binary(max_size=200).map(bytes)
    jsonish = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=10,
    ).map(json.dumps)
    frames = st.one_of(
        junk,
        st.tuples(eio_types, junk).map(lambda t: t[0] + t[1] if isinstance(t[1], str) else t[0].encode() + t[1]),
        st.tuples(eio_types, st.integers(0, 99999).map(str) | st.just(""), jsonish).map("".join),
    )
    started = time.monotonic()
    n = max(200, examples(2000) // 4)

    @fuzz_settings(n)
    @given(frame=frames, connected=st.booleans())
    def case(frame: Any, connected: bool) -> None:
        outcomes[lt.run(probe(backend.url, frame, connected, wait=0.05))] += 1

    try:
        case()
        lt.run(serving(backend.url))
    finally:
        lt.stop()
    assert sum(outcomes.values()) >= n
    assert not log_problems(backend.log()), log_problems(backend.log())[:5]
    text = http_get(backend.url + "/metrics")[1].decode()
    dropped = metric(text, "fleetchat_connections_refused_total", reason="malformed_packet")
    record(
        "raw-fuzz",
        {
            "cases": sum(outcomes.values()),
            "seconds": round(time.monotonic() - started, 1),
            **outcomes,
            "dropped_for_malformed_packets": dropped,
        },
    )
