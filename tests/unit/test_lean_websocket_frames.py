"""The hand-written RFC 6455 parser of ``backend.accel.lean_websocket``, byte by byte:
however TCP splits the stream, valid frames give the same messages, and no
byte sequence makes it raise (the integration tests drive it through a real
hypercorn; here hypothesis drives it with many more streams than a socket can)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.accel.lean_websocket import LeanWebSocket, frame, unmask

MAX_PAYLOAD = 4096


class Transport:
    """Records what the parser writes and whether it closed the connection."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.closed = True  # the parser's side is done: what follows is the close linger

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class Sock:
    sid = "test"

    class server:
        max_http_buffer_size = MAX_PAYLOAD


class Recorder(LeanWebSocket):
    """The parser with the Engine.IO step replaced by a list of whole messages."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        super().__init__(Sock(), Transport())  # type: ignore[arg-type]
        self.messages: list[Any] = []

    def message(self, data: str | bytes) -> None:
        self.messages.append(data)


LOOP = asyncio.new_event_loop()


def feed(ws: LeanWebSocket, pieces: Iterable[bytes]) -> None:
    """Deliver ``pieces`` as the transport would, from inside a running event loop."""

    async def deliver() -> None:
        for piece in pieces:
            ws.data_received(piece)

    LOOP.run_until_complete(deliver())


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """What a browser sends: masked, with the shortest length encoding."""
    unmasked = frame(opcode, payload)
    first = unmasked[0] if fin else unmasked[0] & 0x7F
    header = bytes([first, unmasked[1] | 0x80]) + unmasked[2 : len(unmasked) - len(payload)]
    key = os.urandom(4)
    return header + key + unmask(payload, key)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return [p for p in pieces if p]


texts = st.text(max_size=300).filter(lambda t: len(t.encode()) <= MAX_PAYLOAD)
blobs = st.binary(max_size=300)
messages = st.lists(st.one_of(texts, blobs), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(messages, st.lists(st.integers(min_value=0, max_value=10_000), max_size=40), st.data())
def test_valid_frames_give_the_same_messages_however_the_stream_is_split(msgs, cuts, data):
    stream = b""
    for m in msgs:
        payload = m.encode() if isinstance(m, str) else m
        opcode = 0x1 if isinstance(m, str) else 0x2
        parts = data.draw(st.integers(min_value=1, max_value=3)) if len(payload) > 2 else 1
        size = max(1, len(payload) // parts)
        chunks = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            stream += client_frame(opcode if i == 0 else 0x0, chunk, fin=last)
            if not last and data.draw(st.booleans()):
                stream += client_frame(0x9, b"ping")  # control frames may sit between fragments
    ws = Recorder()
    byte_by_byte = data.draw(st.booleans())
    feed(ws, [stream[i : i + 1] for i in range(len(stream))] if byte_by_byte else split(stream, cuts))
    assert ws.messages == msgs
    assert not ws.transport.closed


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_any_bytes_either_parse_or_close_the_connection_and_never_raise(garbage, cuts):
    ws = Recorder()
    feed(ws, split(garbage, cuts))
    for written in ws.transport.written:
        assert written[0] in (0x88, 0x8A), written  # only a close or a pong goes back
    if ws.transport.closed:
        code = int.from_bytes(ws.transport.written[-1][2:4], "big")
        assert code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or 3000 <= code < 5000


def test_a_frame_longer_than_allowed_is_refused_from_its_header():
    ws = Recorder()
    feed(ws, [bytes([0x81, 0xFF]) + (1 << 40).to_bytes(8, "big")])
    assert ws.transport.closed
    assert ws.transport.written == [frame(0x8, (1009).to_bytes(2, "big"))]


def test_empty_fragments_count_against_the_size_limit():
    fragments = [client_frame(0x1, b"4", fin=False)] + [client_frame(0x0, b"", fin=False)] * 20_000
    ws = Recorder()
    feed(ws, [b"".join(fragments)])
    assert ws.transport.closed
    assert ws.transport.written[-1] == frame(0x8, (1009).to_bytes(2, "big"))
    assert ws.messages == []
