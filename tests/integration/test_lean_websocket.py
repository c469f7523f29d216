"""Socket.IO websockets leave hypercorn after the handshake and are served by
``backend.accel.lean_websocket``: these tests speak raw RFC 6455 frames to a real
``hypercorn backend.app:asgi`` to prove that path keeps the WebSocket and
Engine.IO contracts (control frames, fragments, close codes, limits, pings)
and gives every connection back when it ends."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from typing import Any

import pytest

from backend.config import Settings
from tests.support import ChatClient, async_wait_for, scrape

pytestmark = pytest.mark.timeout(120)

CAP = Settings.model_fields["max_payload_bytes"].default
TEXT, BINARY, CLOSE, PING, PONG, CONT = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


class RawWebSocket:
    """A client that writes frames exactly as told, to provoke the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str, first_frames: bytes = b"") -> RawWebSocket:
        """Handshake for an Engine.IO websocket; ``first_frames`` go out as soon as
        the 101 is read, before the Engine.IO OPEN packet, while the connection may
        still be on its way from hypercorn to the lean protocol."""
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        writer.write(first_frames)
        return cls(reader, writer)

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        flag = 0x80 if mask else 0
        if n < 126:
            head += bytes([flag | n])
        elif n < 65536:
            head += bytes([flag | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([flag | 127]) + n.to_bytes(8, "big")
        if not mask:
            return head + payload
        key = os.urandom(4)
        stream = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")
        return head + key + masked

    def send(self, opcode: int, payload: bytes | str, **kw: Any) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        self.writer.write(self.frame(opcode, data, **kw))

    async def recv(self, timeout: float = 10) -> tuple[int, bytes]:
        """The next frame from the server (servers never mask, nor fragment here)."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not b1 & 0x80, "a server frame must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def recv_text(self, timeout: float = 10) -> str:
        """The next text message, answering nothing and skipping Engine.IO pings."""
        while True:
            opcode, payload = await self.recv(timeout)
            assert opcode == TEXT, (opcode, payload)
            if payload != b"2":
                return payload.decode()

    async def closed_with(self, timeout: float = 10) -> int:
        """Read until the server's close frame; its code, once the TCP connection ends too."""
        while True:
            opcode, payload = await self.recv(timeout)
            if opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big")
                assert await asyncio.wait_for(self.reader.read(), timeout) == b"", "TCP stays open after close"
                return code

    async def connect_socketio(self, name: str) -> str:
        """Engine.IO OPEN, then Socket.IO CONNECT with auth; the Socket.IO sid."""
        assert (await self.recv_text()).startswith("0{")
        self.send(TEXT, "40" + json.dumps({"name": name}))
        reply = await self.recv_text()
        assert reply.startswith('40{"sid":'), reply
        return reply

    def close(self) -> None:
        self.writer.close()


def lean_count(url: str) -> float:
    return scrape(url, "fleetchat_lean_websockets")


def connected(url: str) -> float:
    return scrape(url, "fleetchat_connected_sockets")


async def test_socketio_clients_are_served_by_the_lean_path_and_released_when_they_leave(embedded):
    room = "lean-" + uuid.uuid4().hex[:8]
    base = lean_count(embedded.url)
    alice = await ChatClient(embedded.url, "alice").connect()
    bob = await ChatClient(embedded.url, "bob").connect(transports=["polling", "websocket"])
    try:
        await async_wait_for(lambda: lean_count(embedded.url) == base + 2, 10, what="both handed off")
        await alice.join(room)
        await bob.join(room)
        for i in range(20):
            assert (await alice.send(room, f"a{i}"))["ok"]
            assert (await bob.send(room, f"b{i}"))["ok"]
        want = [f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)]
        for client in (alice, bob):
            await async_wait_for(lambda c=client: sorted(c.texts(room)) == sorted(want), 10, what="all delivered")
    finally:
        await alice.close()
        await bob.close()
    await async_wait_for(lambda: lean_count(embedded.url) == base, 10, what="lean connections released")


async def test_control_frames_and_fragmented_messages_follow_rfc_6455(embedded):
    ws = await RawWebSocket.open(embedded.url)
    try:
        assert (await ws.recv_text()).startswith("0{")
        ws.send(PING, b"are you there")
        assert await ws.recv() == (PONG, b"are you there")
        # Socket.IO CONNECT in three fragments, a ping between two of them
        ws.send(TEXT, "40", fin=False)
        ws.send(CONT, '{"name":', fin=False)
        ws.send(PING, b"mid")
        ws.send(CONT, '"frag"}')
        assert await ws.recv() == (PONG, b"mid")
        assert (await ws.recv_text()).startswith('40{"sid":')
        ws.send(TEXT, '421["join",{"room":"frag-room"}]')
        ack = await ws.recv_text()
        assert ack.startswith('431[{"ok":true'), ack
        ws.send(CLOSE, (1000).to_bytes(2, "big"))
        assert await ws.closed_with() == 1000
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (RawWebSocket.frame(TEXT, b"40", mask=False), 1002),  # clients must mask
        (RawWebSocket.frame(TEXT, b"40", rsv=0x40), 1002),  # no extension was agreed
        (RawWebSocket.frame(0x3, b"40"), 1002),  # reserved opcode
        (RawWebSocket.frame(CONT, b"40"), 1002),  # continuation of nothing
        (RawWebSocket.frame(PING, b"x" * 126), 1002),  # control frames carry at most 125 bytes
        (RawWebSocket.frame(TEXT, b"4\xff\xfe"), 1007),  # text that is not UTF-8
        (RawWebSocket.frame(TEXT, b"not engine.io"), 1002),  # not an Engine.IO packet
        (bytes([0x81, 0xFF]) + (1 << 40).to_bytes(8, "big") + b"mask", 1009),  # a terabyte announced
        (RawWebSocket.frame(TEXT, b"4" + b"x" * CAP), 1009),  # one character over CHAT_MAX_PAYLOAD_BYTES
        # refused from its header (over 4 bytes per character of the cap), the rest still coming
        (bytes([0x81, 0xFF]) + (4 * CAP + 65).to_bytes(8, "big") + b"mask" + b"x" * 1000, 1009),
    ],
    ids=[
        "unmasked",
        "rsv-bits",
        "bad-opcode",
        "stray-continuation",
        "long-ping",
        "bad-utf8",
        "not-eio",
        "huge",
        "too-big",
        "too-big-in-flight",
    ],
)
async def test_a_bad_frame_closes_that_connection_with_the_matching_code(embedded, frame, code):
    base = lean_count(embedded.url)
    bystander = await ChatClient(embedded.url, "bystander").connect()
    ws = await RawWebSocket.open(embedded.url)
    try:
        assert (await ws.recv_text()).startswith("0{")
        ws.writer.write(frame)
        assert await ws.closed_with() == code
        room = "bad-" + uuid.uuid4().hex[:8]
        await bystander.join(room)
        assert (await bystander.send(room, "still here"))["ok"]
    finally:
        ws.close()
        await bystander.close()
    await async_wait_for(lambda: lean_count(embedded.url) == base, 10, what="connections released")


async def test_frames_sent_before_the_open_packet_are_not_lost(embedded):
    eager = RawWebSocket.frame(PING, b"eager") + RawWebSocket.frame(TEXT, b'40{"name":"eager"}')
    ws = await RawWebSocket.open(embedded.url, first_frames=eager)
    try:
        seen: list[tuple[int, bytes]] = []
        while not any(p.startswith(b'40{"sid":') for _, p in seen):
            seen.append(await ws.recv())
        assert (PONG, b"eager") in seen
        assert seen[0][1].startswith(b"0{"), seen
    finally:
        ws.close()


async def test_a_client_that_stops_answering_pings_is_dropped_and_one_that_answers_stays(backends):
    backend = backends(env={"CHAT_PING_INTERVAL_SECONDS": "0.5", "CHAT_PING_TIMEOUT_SECONDS": "2"})
    mute = await RawWebSocket.open(backend.url)
    alive = await RawWebSocket.open(backend.url)
    try:
        await mute.connect_socketio("mute")
        await alive.connect_socketio("alive")
        assert lean_count(backend.url) == 2
        started = time.monotonic()
        pongs = 0
        while time.monotonic() - started < 4:
            opcode, payload = await alive.recv(5)
            if (opcode, payload) == (TEXT, b"2"):
                alive.send(TEXT, "3")
                pongs += 1
        assert pongs >= 3
        assert await mute.closed_with() == 1000  # after its Engine.IO CLOSE packet
        await async_wait_for(lambda: lean_count(backend.url) == 1, 10, what="the mute one released")
        assert connected(backend.url) == 1
    finally:
        mute.close()
        alive.close()


async def test_with_the_lean_path_off_connections_stay_with_hypercorn_and_chat_works(backends):
    backend = backends(
        env={"CHAT_LEAN_WEBSOCKETS": "false", "CHAT_PING_INTERVAL_SECONDS": "0.5", "CHAT_PING_TIMEOUT_SECONDS": "2"}
    )
    room = "heavy-" + uuid.uuid4().hex[:8]
    alice = await ChatClient(backend.url, "alice").connect()
    bob = await ChatClient(backend.url, "bob").connect(transports=["polling", "websocket"])
    mute = await RawWebSocket.open(backend.url)
    try:
        await mute.connect_socketio("mute")
        await alice.join(room)
        await bob.join(room)
        assert (await alice.send(room, "through hypercorn"))["ok"]
        await async_wait_for(lambda: "through hypercorn" in bob.texts(room), 10, what="delivery")
        assert lean_count(backend.url) == 0
        await async_wait_for(lambda: connected(backend.url) == 2, 15, what="the mute one dropped on ping timeout")
    finally:
        mute.close()
        await alice.close()
        await bob.close()
