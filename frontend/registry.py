"""Which tab has a live listener: the module-level registry keyed by client token.

Reflex state is pickled between events, so a tab's live Socket.IO client cannot
live in a state var. Each tab's listener task registers here instead. A
listener that starts for a tab which already has one (a reload, a Reflex
reconnect re-running `on_load`) cancels its predecessor and waits for it to
close its connection, so one tab never holds two.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

_tabs: dict[str, Tab] = {}


@dataclass(eq=False)
class Tab:
    """One tab's listener: its task and the queue that wakes it."""

    token: str
    task: asyncio.Task[Any] | None
    # Server events, pokes from the UI's event handlers, disconnect notices.
    inbox: asyncio.Queue[tuple[Any, ...]] = field(default_factory=asyncio.Queue)


async def claim(token: str) -> Tab:
    """Register the current task as the tab's listener, ending any previous one."""
    tab = Tab(token=token, task=asyncio.current_task())
    previous = _tabs.get(token)
    _tabs[token] = tab
    if previous is not None and previous.task is not None and not previous.task.done():
        previous.task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait({previous.task}, timeout=5)
    return tab


def release(tab: Tab) -> None:
    """Forget the tab's listener unless a newer one already took its place."""
    if _tabs.get(tab.token) is tab:
        del _tabs[tab.token]


def poke(token: str, *item: Any) -> bool:
    """Hand an item to the tab's listener; False when the tab has none."""
    tab = _tabs.get(token)
    if tab is None:
        return False
    tab.inbox.put_nowait(item)
    return True


def count() -> int:
    """How many tabs have a listener in this process."""
    return len(_tabs)
