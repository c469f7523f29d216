"""Lean per-connection asyncio objects in hypercorn.

hypercorn allocates, per connection, an ASGI receive ``asyncio.Queue`` (four
760-byte deques, 3.4 KB, almost never more than one item) and a ``can_read``
``asyncio.Event`` with a deque of waiters. hypercorn has no hook for either:
``TaskGroup.spawn_app`` is replaced by hypercorn 0.18's own body with
``idle_memory.lean_queue``, and ``WorkerContext.event_class`` by a subclass
whose event waits on a list. Part of the idle-memory figure of ``idle_memory``
(44.5 -> 31.6 KB per idle connection, both halves).
"""

from __future__ import annotations

import asyncio
import collections
from functools import partial
from typing import Any

from backend.accel.base import PYTHON, Cut
from backend.accel.idle_memory import WaitList, lean_queue

_originals: dict[str, Any] = {}


def _lean_spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
    """hypercorn 0.18's ``TaskGroup.spawn_app`` with a lean ASGI receive queue."""
    from hypercorn.asyncio.task_group import _handle

    app_queue = lean_queue(config.max_app_queue_size)

    def _call_soon(func: Any, *args: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(func(*args), self._loop)
        return future.result()

    self.spawn(_handle, app, config, scope, app_queue.get, send, partial(self._loop.run_in_executor, None), _call_soon)
    return app_queue.put


async def _spawn_app(self: Any, app: Any, config: Any, scope: Any, send: Any) -> Any:
    return _lean_spawn_app(self, app, config, scope, send)


def _lean_event_wrapper(base: type) -> type:
    class LeanEventWrapper(base):  # type: ignore[valid-type,misc]
        """hypercorn's per-connection ``asyncio.Event`` (``can_read``) with a list for its waiters."""

        def __init__(self) -> None:
            super().__init__()
            event = getattr(self, "_event", None)
            if isinstance(getattr(event, "_waiters", None), collections.deque) and not event._waiters:  # type: ignore[union-attr]
                event._waiters = WaitList()  # type: ignore[union-attr]

    return LeanEventWrapper


def _install() -> None:
    from hypercorn.asyncio.task_group import TaskGroup
    from hypercorn.asyncio.worker_context import WorkerContext

    _originals["spawn_app"] = TaskGroup.spawn_app
    _originals["event_class"] = WorkerContext.event_class
    WorkerContext.event_class = _lean_event_wrapper(WorkerContext.event_class)  # type: ignore[misc]
    TaskGroup.spawn_app = _spawn_app  # type: ignore[method-assign]


def _uninstall() -> None:
    from hypercorn.asyncio.task_group import TaskGroup
    from hypercorn.asyncio.worker_context import WorkerContext

    TaskGroup.spawn_app = _originals.pop("spawn_app")  # type: ignore[method-assign]
    WorkerContext.event_class = _originals.pop("event_class")  # type: ignore[misc]


CUT = Cut(
    name="idle_memory_hypercorn",
    library="hypercorn, CPython asyncio",
    requires={"hypercorn": "0.18.0", PYTHON: "3.11"},
    buys="part of idle_memory's 44.5 -> 31.6 KB per idle connection (hypercorn's share: 12.3 KB, its queue 3.4 KB)",
    install=_install,
    uninstall=_uninstall,
)
