"""One tab's Socket.IO connection to the chat backend fleet.

The connection is an `AsyncClient` on the websocket transport with its own
reconnection turned off: the tab's listener reconnects itself so that it can
fail over along CHAT_BACKEND_URL and rejoin its rooms with `since`. Callbacks
only hand events over to the tab's inbox; the listener applies them to state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import aiohttp
import socketio

DEFAULT_BACKEND_URL = "http://localhost:8000"
SERVER_EVENTS = ("message", "presence", "typing", "notification")
CALL_TIMEOUT = 10.0


def backend_urls() -> list[str]:
    """The chat backends to try, in order, from CHAT_BACKEND_URL (comma-separated)."""
    raw = os.environ.get("CHAT_BACKEND_URL", "") or DEFAULT_BACKEND_URL
    urls = [url.strip().rstrip("/") for url in raw.split(",") if url.strip()]
    return urls or [DEFAULT_BACKEND_URL]


def _ignore_ack(*_ack: Any) -> None:
    """The protocol acks every event; some acks change nothing."""


class LinkDown(Exception):
    """The connection is gone (or never came up); the listener reconnects."""


class BackendLink:
    """A connection to one backend at a time, trying the URLs in turn."""

    def __init__(self, urls: list[str], name: str, inbox: asyncio.Queue, start: int = 0):
        self.urls = urls
        self.name = name
        self.inbox = inbox
        # Index into urls of the backend to try first (the last one that worked).
        self.index = start % len(urls)
        self.url = ""
        self.client: socketio.AsyncClient | None = None
        self.http: aiohttp.ClientSession | None = None
        # Set when the connected client drops: calls waiting for an ack give up at once.
        self.down = asyncio.Event()

    def _new_client(self) -> socketio.AsyncClient:
        client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        inbox = self.inbox

        def forward(event: str):
            async def handler(data: Any = None) -> None:
                inbox.put_nowait(("event", event, data))

            return handler

        for event in SERVER_EVENTS:
            client.on(event, forward(event))

        async def on_disconnect(*_reason: Any) -> None:
            # Tagged with the client: a late notice from a replaced client is ignored.
            if client is self.client:
                self.down.set()
            inbox.put_nowait(("down", client))

        client.on("disconnect", on_disconnect)
        return client

    async def connect(self) -> str:
        """Connect to the first backend that answers, starting at `index`.

        Raises LinkDown with every backend's reason when none does.
        """
        reasons = []
        for attempt in range(len(self.urls)):
            index = (self.index + attempt) % len(self.urls)
            url = self.urls[index]
            client = self._new_client()
            try:
                await client.connect(
                    url,
                    auth={"name": self.name},
                    transports=["websocket"],
                    socketio_path="socket.io",
                    wait_timeout=5,
                )
            except (TimeoutError, socketio.exceptions.ConnectionError, OSError) as exc:
                reasons.append(f"{url}: {exc}")
                with contextlib.suppress(Exception):
                    await client.disconnect()
                continue
            self.client, self.url, self.index = client, url, index
            return url
        raise LinkDown("; ".join(reasons))

    async def tell(self, event: str, data: dict[str, Any]) -> None:
        """Emit an event whose ack nobody waits for (typing notices)."""
        if self.client is None or not self.client.connected or self.down.is_set():
            raise LinkDown("not connected")
        try:
            await self.client.emit(event, data, callback=_ignore_ack)
        except socketio.exceptions.BadNamespaceError as exc:
            raise LinkDown(f"{event}: {exc!r}") from exc

    def owns(self, client: Any) -> bool:
        return client is self.client

    async def call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Emit an event and wait for its ack; LinkDown when the link fails first."""
        if self.client is None or not self.client.connected or self.down.is_set():
            raise LinkDown("not connected")
        call = asyncio.ensure_future(self.client.call(event, data, timeout=CALL_TIMEOUT))
        down = asyncio.ensure_future(self.down.wait())
        try:
            await asyncio.wait({call, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (call, down):
                task.cancel()
        if not call.done() or call.cancelled():
            raise LinkDown(f"{event}: connection lost while waiting for the ack")
        try:
            ack = call.result()
        except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError) as exc:
            raise LinkDown(f"{event}: {exc!r}") from exc
        if not isinstance(ack, dict):
            return {"ok": False, "error": "bad_ack", "detail": repr(ack)}
        return ack

    async def rooms(self) -> list[dict[str, Any]]:
        """The backend's room directory (GET /api/rooms); [] when it cannot say."""
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self.http.get(f"{self.url}/api/rooms") as response:
                if response.status != 200:
                    return []
                body = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return []
        rooms = body.get("rooms") if isinstance(body, dict) else None
        return rooms if isinstance(rooms, list) else []

    async def close(self) -> None:
        """Disconnect and release everything; safe to call more than once."""
        client, self.client = self.client, None
        http, self.http = self.http, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=3)
        if http is not None:
            with contextlib.suppress(Exception):
                await http.close()
