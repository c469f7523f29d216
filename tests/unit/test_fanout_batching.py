"""Fanout's batching: an instance at rest writes at once, a busy one at most once per linger.

The sockets here take the queue path (engine.io's socket queue, what a long-polling
client gets), so each flush shows as the packets it queued; the integration and
browser suites run the same code against real sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from socketio import packet as sio_packet

from backend.fanout import Fanout

HOUR = 3600.0


class Sock:
    """An engine.io socket as Fanout sees one that cannot be written to directly."""

    closed = False

    def __init__(self) -> None:
        self.queue = asyncio.Queue[Any]()

    def texts(self) -> list[str]:
        packets = []
        while not self.queue.empty():
            packets.append(self.queue.get_nowait().data)
        return packets


class Server:
    """The three things Fanout asks of python-socketio's server: its packet class, its
    engine.io sockets and the room's participants."""

    packet_class = sio_packet.Packet

    def __init__(self, members: dict[str, Sock]) -> None:
        self.eio = type("Eio", (), {"sockets": {f"e-{sid}": sock for sid, sock in members.items()}})()
        self.manager = self

    def get_participants(self, namespace: str, room: str) -> list[tuple[str, str]]:
        return [(sid[2:], sid) for sid in self.eio.sockets]


async def ticks(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def fanout(linger: float, *socks: Sock) -> tuple[Fanout, list[int]]:
    flushed: list[int] = []
    return Fanout(Server({f"s{i}": s for i, s in enumerate(socks)}), flushed.append, linger=linger), flushed


def msg(seq: int) -> dict[str, Any]:
    return {"room": "general", "seq": seq, "text": f"m{seq}"}


async def test_an_instance_at_rest_delivers_the_first_message_at_the_next_tick() -> None:
    sock = Sock()
    out, flushed = fanout(HOUR, sock)
    out.emit("general", "message", msg(1))
    assert sock.texts() == []  # nothing written inside the emit itself
    await ticks()
    assert len(sock.texts()) == 1
    assert flushed == [1]


async def test_messages_within_the_linger_wait_and_go_out_together() -> None:
    a, b = Sock(), Sock()
    out, flushed = fanout(HOUR, a, b)
    out.emit("general", "message", msg(1))
    await ticks()
    a.texts(), b.texts()
    for seq in (2, 3, 4):
        out.emit("general", "message", msg(seq))
        await ticks()
    assert a.texts() == [] and b.texts() == []  # held: the last flush was less than a linger ago
    out.flush()  # what a join does before the socket enters the room
    texts = a.texts()
    assert [json.loads(t[1:])[1]["seq"] for t in texts] == [2, 3, 4]  # "2" + [event, data]
    assert b.texts() == texts
    assert flushed == [2, 6]  # one flush per batch, each counting its deliveries
    await ticks()
    assert a.texts() == [] and flushed == [2, 6]  # the timer it replaced was cancelled


async def test_a_held_batch_goes_out_once_the_linger_has_passed() -> None:
    sock = Sock()
    out, flushed = fanout(0.02, sock)
    out.emit("general", "message", msg(1))
    await ticks()
    out.emit("general", "message", msg(2))
    for _ in range(500):  # bounded: at most 5 s
        if len(flushed) == 2:
            break
        await asyncio.sleep(0.01)
    assert flushed == [1, 1]
    assert len(sock.texts()) == 2


@pytest.mark.parametrize("linger", [0.0, HOUR])
async def test_without_pending_events_a_flush_writes_nothing_and_counts_nothing(linger: float) -> None:
    sock = Sock()
    out, flushed = fanout(linger, sock)
    out.flush()
    await ticks()
    assert flushed == [] and sock.texts() == []


async def test_with_no_linger_every_tick_is_its_own_batch() -> None:
    sock = Sock()
    out, flushed = fanout(0.0, sock)
    for seq in (1, 2, 3):
        out.emit("general", "message", msg(seq))
        await ticks()
    assert flushed == [1, 1, 1]
    assert len(sock.texts()) == 3
