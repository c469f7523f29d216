"""SIGTERM: hand this instance's clients to the rest of the fleet at once.

hypercorn's own SIGTERM handling stops accepting and then waits out its
graceful timeout while websockets stay open, so clients would only move after
the timeout. Here SIGTERM first marks the instance as draining (``/readyz``
answers 503, so a load balancer stops sending new clients), closes every
websocket with a normal close frame (socket.io clients see a transport close
and reconnect, to another instance behind the balancer), and then asks
hypercorn for its usual graceful shutdown with SIGINT, which now has nothing
left to wait for.

This applies when hypercorn serves in its own process (``--workers 0``, as
the Procfile does); with worker subprocesses the parent owns the signals and
hypercorn's default behaviour stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from backend.accel.server import hang_up

log = logging.getLogger(__name__)


class Drain:
    def __init__(self, server: Any) -> None:
        self._server = server
        self.draining = False
        self.bridge_closers: dict[str, Callable[[], None]] = {}
        """Open /ws bridge connections: each closer makes its socket close with 1001."""
        self._closer: asyncio.Task[None] | None = None

    def install(self) -> bool:
        """Take over SIGTERM for this event loop; False where that is not possible."""
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self.begin)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        return True

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("SIGTERM: draining, closing %d sockets so their clients reconnect elsewhere", self._close_all())
        self._closer = asyncio.get_running_loop().create_task(self._keep_closing())
        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGINT)

    def _close_all(self) -> int:
        fanout = getattr(self._server.manager, "fanout", None)
        if fanout is not None:
            fanout.flush()  # deliveries still lingering go out before the close frames
        sockets = [s for s in self._server.eio.sockets.values() if not s.closed]
        for sock in sockets:
            with contextlib.suppress(Exception):
                hang_up(sock)  # a normal close frame; the client reconnects elsewhere
        bridges = list(self.bridge_closers.values())
        self.bridge_closers.clear()
        for close in bridges:
            close()
        return len(sockets) + len(bridges)

    async def _keep_closing(self) -> None:
        """Connections accepted just before hypercorn stops listening are closed too,
        so its graceful shutdown never waits on a client."""
        while True:
            await asyncio.sleep(0.1)
            self._close_all()
