"""Ordered, exactly-once delivery of each room's messages to this instance.

Pub/sub is only the fast path: python-socketio's Redis manager drops a
publish that fails, its listener resubscribes after a gap without telling
anyone, and two instances can publish seq 6 before seq 5. The relay tracks
the last ``seq`` it delivered per room; a duplicate is dropped, a message
ahead of a gap is held briefly (a reordering usually fills it within
milliseconds) and otherwise the gap is read back from the store. A periodic
sweep compares the store's newest ``seq`` with ours, so even the last message
of a burst that pub/sub lost arrives. Loss in pub/sub costs latency, not data,
and clients that know nothing of ``seq`` (plain socket.io, the /ws bridge)
still see every message once, in order.

The same relay, keyed on ``rev`` instead of ``seq``, carries the room's
``update`` events (edits, deletes, reactions): they are numbered without
gaps too, so they get the same guarantees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from backend.store.base import Message, MessageStore, StoreUnavailable

log = logging.getLogger(__name__)

Deliver = Callable[[str, Message], None]
FILL_BATCH = 500


def _uncounted() -> None:
    return None


@dataclass
class RelayCounts:
    """Where the relay's exceptions are counted (``fleetchat_relay_*_total``)."""

    replayed: Callable[[], None] = _uncounted
    """A message read back from the store to close a gap."""
    held: Callable[[], None] = _uncounted
    """A message that arrived before an earlier one and waited for it."""


class Relay:
    def __init__(
        self,
        store: MessageStore,
        deliver: Deliver,
        gap_wait: float = 0.05,
        stream: Literal["messages", "updates"] = "messages",
        on_regress: Callable[[str], None] | None = None,
        counts: RelayCounts | None = None,
    ) -> None:
        self._store = store
        self._deliver = deliver
        self._on_regress = on_regress
        self._key = "seq" if stream == "messages" else "rev"
        self._fetch = store.after if stream == "messages" else store.updates_after
        self._newest = store.last_seqs if stream == "messages" else store.last_revs
        self._gap_wait = gap_wait
        self._last: dict[str, int] = {}
        self._held: dict[str, dict[int, Message]] = {}
        self._fills: dict[str, asyncio.Task[None]] = {}
        self._resets: dict[str, int] = {}
        """Times each room was reset: a sweep whose read spans a reset compares nothing."""
        self._sweeps: set[asyncio.Task[None]] = set()
        self.counts = counts or RelayCounts()

    def track(self, room: str, last_seq: int) -> None:
        """Start relaying ``room`` after ``last_seq`` (what a joiner got as history)."""
        if room not in self._last:
            self._last[room] = last_seq

    def reset(self, room: str, last_seq: int = 0) -> None:
        """The room's history began again (a new epoch): relay it from ``last_seq`` on."""
        if room in self._last:
            resets = self._resets.get(room, 0) + 1
            self.untrack(room)
            self._last[room] = last_seq
            self._resets[room] = resets

    def untrack(self, room: str) -> None:
        """No local listener is left in ``room``."""
        self._last.pop(room, None)
        self._held.pop(room, None)
        self._resets.pop(room, None)
        task = self._fills.pop(room, None)
        if task:
            task.cancel()

    def last(self, room: str) -> int:
        """The last seq delivered (or to be delivered next after) in a tracked room."""
        return self._last[room]

    def tracked(self) -> list[str]:
        return list(self._last)

    def accept(self, message: Message) -> None:
        """A message from any path (local send, pub/sub, replay)."""
        room = message["room"]
        last = self._last.get(room)
        if last is None:
            return
        seq = message[self._key]
        if seq <= last:
            return
        if seq == last + 1:
            self._last[room] = seq
            self._deliver(room, message)
            self._drain(room)
            return
        self._held.setdefault(room, {})[seq] = message
        self.counts.held()
        self._schedule_fill(room, self._gap_wait)

    def _drain(self, room: str) -> None:
        held = self._held.get(room)
        if not held:
            return
        last = self._last[room]
        while (nxt := held.pop(last + 1, None)) is not None:
            last += 1
            self._deliver(room, nxt)
        self._last[room] = last
        for stale in [s for s in held if s <= last]:
            del held[stale]
        if not held:
            del self._held[room]

    def _schedule_fill(self, room: str, wait: float) -> None:
        if room not in self._fills:
            self._fills[room] = asyncio.get_running_loop().create_task(self._fill(room, wait))

    async def _fill(self, room: str, wait: float) -> None:
        try:
            if wait:
                await asyncio.sleep(wait)
            while room in self._last:
                held = self._held.get(room)
                if wait and not held:
                    return  # the reordering resolved itself
                last = self._last[room]
                missing = await self._fetch(room, last, FILL_BATCH)
                if not missing:
                    return
                key = self._key
                if room in self._last and missing[0][key] > self._last[room] + 1:
                    # what we lack is no longer stored: it cannot be replayed
                    log.warning(
                        "relay: %s %s %d..%d no longer stored; skipping", room, key, last + 1, missing[0][key] - 1
                    )
                    self._last[room] = missing[0][key] - 1
                for message in missing:
                    if message[key] > self._last.get(room, message[key]):
                        self.counts.replayed()
                    self.accept(message)
                if len(missing) < FILL_BATCH and not self._held.get(room):
                    return
        except StoreUnavailable as exc:
            log.warning("relay: cannot fill gap in %s yet: %s", room, exc)
        finally:
            if self._fills.get(room) is asyncio.current_task():
                del self._fills[room]

    def sweep_soon(self) -> None:
        """Sweep as soon as the loop is free (after pub/sub came back)."""
        task = asyncio.get_running_loop().create_task(self._sweep_logged())
        self._sweeps.add(task)
        task.add_done_callback(self._sweeps.discard)

    async def _sweep_logged(self) -> None:
        try:
            await self.sweep()
        except StoreUnavailable as exc:
            log.warning("relay: sweep after resubscribe failed: %s", exc)

    async def sweep(self) -> None:
        """Catch up every tracked room whose store is ahead of what we relayed."""
        rooms = self.tracked()
        if not rooms:
            return
        asked_at = [self._last[room] for room in rooms]
        resets = [self._resets.get(room, 0) for room in rooms]
        newest = await self._newest(rooms)
        for room, seq, before, reset in zip(rooms, newest, asked_at, resets, strict=True):
            last = self._last.get(room)
            if last is None:
                continue
            if self._resets.get(room, 0) != reset:
                # the room began a new epoch while the read was in flight: what was read
                # may be from before it, and a lower seq is no loss (the next sweep looks)
                continue
            # Compare with what was delivered before asking: messages relayed
            # while the read was in flight make ``seq < last`` without any loss.
            if seq < before:  # history was lost (Redis flushed, or came back from a stale copy)
                log.warning("relay: %s went back from %s %d to %d; history was lost", room, self._key, last, seq)
                if self._on_regress is not None:
                    self._on_regress(room)  # a new epoch: the relay is reset from there
                else:
                    self._last[room] = seq
                    self._held.pop(room, None)
            elif seq > last:
                self._schedule_fill(room, 0)
