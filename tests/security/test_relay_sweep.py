"""Regression: a relay sweep whose store read overlaps live delivery must not
mistake the busy room for a reset history and deliver messages again (found
by the fleet flood test: a duplicate under 1,000 msg/s)."""

from __future__ import annotations

import asyncio

from backend.relay import Relay
from tests.unit.test_relay import ListStore


class SlowSweepStore(ListStore):
    """``last_seqs`` answers what the log held when asked, after a pause."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def last_seqs(self, rooms: list[str]) -> list[int]:
        snapshot = len(self.log)
        self.asked.set()
        await self.release.wait()
        return [snapshot for _ in rooms]


async def test_messages_relayed_during_a_sweep_are_not_delivered_twice():
    store = SlowSweepStore()
    delivered: list[int] = []
    relay = Relay(store, lambda room, m: delivered.append(m["seq"]))
    relay.track("r", 0)
    for seq in (1, 2, 3):
        relay.accept(store.add(seq))
    sweep = asyncio.create_task(relay.sweep())
    await store.asked.wait()  # the sweep read seq 3 ...
    for seq in (4, 5, 6):  # ... while live delivery went on
        relay.accept(store.add(seq))
    store.release.set()
    await sweep
    relay.accept(store.add(7))
    await asyncio.sleep(0.1)  # let any (wrong) refill run
    assert delivered == [1, 2, 3, 4, 5, 6, 7]
    assert relay.last("r") == 7
