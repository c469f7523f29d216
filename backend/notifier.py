"""The embedded mode's in-process sub-backend: mention notifications off the
request path. A send only enqueues; this task does the work later, exactly
what ``backend.worker`` does for a fleet from the Redis streams."""

from __future__ import annotations

import asyncio
import logging

from backend.chat import Chat
from backend.store.base import Message

log = logging.getLogger(__name__)


class LocalNotifier:
    def __init__(self, chat: Chat, backlog: int = 10_000) -> None:
        self._chat = chat
        self._queue: asyncio.Queue[Message] = asyncio.Queue(backlog)

    def submit(self, message: Message) -> None:
        if "@" not in message["text"]:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("notifier backlog full; mention in %s not notified", message["room"])

    async def run(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._chat.notify(message)
            except Exception:
                log.exception("mention notification failed")
