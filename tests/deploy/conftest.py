"""The fleet that ``make fleet`` runs (deploy/fleet.py), started for real: Redis,
three instances, Debian's nginx on a free port, the worker (no UI: the e2e
tests cover it), plus clients that resume through the load balancer."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from tests.support import LocalFleet


@pytest.fixture(scope="module")
def local_fleet() -> Iterator[LocalFleet]:
    fleet = LocalFleet().start()
    yield fleet
    fleet.stop()


def message_id(seq: int) -> str:
    return f"{seq:012d}"


class ResumingClient:
    """A Socket.IO client (websocket transport) that does what the protocol asks
    of a client that reconnects: it joins again with ``since`` = the last message
    it holds without a gap, and resends an unacknowledged message with the same
    ``client_id``. It records every message it receives and how long each
    outage lasted (from the disconnect to the rejoin ack)."""

    def __init__(self, url: str, name: str, room: str) -> None:
        self.url, self.name, self.room = url, name, room
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_attempts=0,
            reconnection_delay=0.1,
            reconnection_delay_max=1.0,
            randomization_factor=0.5,
        )
        self.received: dict[int, dict[str, Any]] = {}
        self.duplicates: list[tuple[int, str]] = []
        self.first_seq: int | None = None
        self.joined = asyncio.Event()
        self.outages: list[float] = []
        self.joins = 0
        self._down_since: float | None = None
        self._rejoin: asyncio.Task[None] | None = None
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("message", self._accept)
        self.notifications: list[dict[str, Any]] = []
        self.sio.on("notification", self.notifications.append)

    def _accept(self, message: dict[str, Any], since: int | None = None) -> None:
        """A live message (``since`` None) or one of a join's history (after ``since``)."""
        if message.get("room") != self.room:
            return
        seq = message["seq"]
        if seq in self.received:
            # Asked for again with `since` (this client held a later message than its
            # resume point) is expected; a live message twice, or history it did not ask for, is not.
            if since is None or seq <= since:
                self.duplicates.append((seq, "live" if since is None else "history"))
            return
        self.received[seq] = message

    def resume_point(self) -> int:
        """The highest seq up to which this client holds every message since it first joined."""
        if self.first_seq is None:
            return 0
        seq = self.first_seq - 1
        while seq + 1 in self.received:
            seq += 1
        return seq

    async def _on_connect(self) -> None:
        # Acks are read by the same loop that runs this handler: join from a task.
        self._rejoin = asyncio.create_task(self._join())

    def _on_disconnect(self, reason: Any = None) -> None:
        self.joined.clear()
        if self._down_since is None:
            self._down_since = time.monotonic()

    async def _join(self) -> None:
        for _ in range(20):
            request: dict[str, Any] = {"room": self.room}
            since = self.resume_point()
            if self.first_seq is not None:
                request["since"] = message_id(since)
            try:
                ack = await self.sio.call("join", request, timeout=5)
            except (TimeoutError, socketio.exceptions.SocketIOError):
                if not self.sio.connected:
                    return  # the next connect event joins again
                continue
            if not ack.get("ok"):
                await asyncio.sleep(0.1)
                continue
            if self.first_seq is None:
                self.first_seq = ack["last_seq"] + 1
            for message in ack["history"]:
                if message["seq"] >= self.first_seq:
                    self._accept(message, since)
            self.joins += 1
            if self._down_since is not None:
                self.outages.append(time.monotonic() - self._down_since)
                self._down_since = None
            self.joined.set()
            return

    async def connect(self) -> ResumingClient:
        await self.sio.connect(self.url, auth={"name": self.name}, transports=["websocket"], wait_timeout=10)
        await asyncio.wait_for(self.joined.wait(), 10)
        return self

    async def send(self, text: str, deadline: float = 60.0) -> dict[str, Any]:
        """Send until acknowledged, with one client_id throughout; the ack says it is stored."""
        client_id = uuid.uuid4().hex
        give_up = time.monotonic() + deadline
        last: Any = None
        while time.monotonic() < give_up:
            try:
                await asyncio.wait_for(self.joined.wait(), max(0.1, give_up - time.monotonic()))
                ack = await self.sio.call(
                    "message", {"room": self.room, "text": text, "client_id": client_id}, timeout=3
                )
            except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
                last = exc
                await asyncio.sleep(0.05)
                continue
            if ack.get("ok"):
                return {**ack, "text": text}
            last = ack
            if ack.get("error") not in ("unavailable", "not_in_room"):
                raise AssertionError(f"{self.name}: send refused: {ack}")
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name}: {text!r} not acknowledged within {deadline}s (last: {last!r})")

    async def close(self) -> None:
        if self._rejoin is not None:
            self._rejoin.cancel()
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
