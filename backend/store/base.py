"""The store contract: an append-only, per-room log with a gap-free ``seq``.

The store is the source of truth: a message exists once ``append`` returns,
and every fan-out path (pub/sub, replay after a gap, resume with ``since``)
reads from here. Implementations: ``sqlite.SqliteStore`` (embedded) and
``redis.RedisStore`` (fleet).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from backend.lifecycle import Change
from backend.models import ChatError

Message = dict[str, Any]
"""``{"id", "seq", "room", "user": {"id", "name"}, "text", "ts", "client_id"}``, and as
it changes: ``rev`` (the room's update rev of its latest change), ``edited_ts``,
``deleted``, ``reactions`` (``{emoji: [user ids]}``); ``reply_to`` from birth."""
Update = dict[str, Any]
"""``{"room", "id", "kind", "rev", "message"}``: a message changed (backend/lifecycle.py)."""


class StoreUnavailable(Exception):
    """The backing service cannot be reached; callers answer ``unavailable``."""


class RateLimited(Exception):
    """The user is over their message rate (a store that enforces it fleet-wide)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry in {retry_after:.2f}s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class AppendResult:
    message: Message
    created: bool
    """False when ``client_id`` was seen before: ``message`` is the first one."""
    announced: bool = False
    """True when the store already published the message to the other instances."""


@dataclass(frozen=True, slots=True)
class ChangeResult:
    update: Update
    """The update event, or for a change that changed nothing the message's current state
    (``update["rev"]`` is then the message's own rev)."""
    created: bool
    """False when nothing new happened (a resent ``client_id``, a no-op change)."""
    announced: bool = False
    """True when the store already published the update to the other instances."""


@dataclass(frozen=True, slots=True)
class RoomAccess:
    """A private room (invited members only) or a direct message; a public room has none."""

    dm: bool = False
    owner: str | None = None
    """The user id that created it and may invite and remove (None for a DM)."""


@dataclass(frozen=True, slots=True)
class RoomInfo:
    epoch: str
    """Changes only when the room's stored history was lost."""
    last_seq: int
    last_rev: int = 0
    """The room's newest update rev: changes to its messages are numbered 1, 2, 3, ..."""


class MessageStore(abc.ABC):
    """Append-only room logs. All methods may raise ``StoreUnavailable``."""

    limits_users = False
    """True when ``append`` enforces the per-user message rate itself (and may
    raise ``RateLimited``); otherwise the caller limits users in memory."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the store answers (drives ``/readyz``)."""

    @abc.abstractmethod
    async def append(
        self, room: str, user: dict[str, str], text: str, client_id: str, ts: int, reply_to: int | None = None
    ) -> AppendResult:
        """Store a message, assigning the room's next ``seq`` and its ``id``,
        atomically with the dedupe check on ``(user id, client_id)``. A
        ``reply_to`` seq that the room does not have raises ``ChatError('not_found')``."""

    @abc.abstractmethod
    async def change(self, change: Change) -> ChangeResult:
        """Apply an edit, delete or reaction atomically (``backend.lifecycle.apply``
        says who may and what it does), numbering it with the room's next ``rev``.
        Raises ``ChatError`` (``not_found``, ``forbidden``) when it may not."""

    @abc.abstractmethod
    async def updates_after(self, room: str, after_rev: int, limit: int) -> list[Update]:
        """Update events with ``rev > after_rev``, oldest first, each carrying the
        message's state now (so a later one may repeat an earlier one's state)."""

    @abc.abstractmethod
    async def changed_since(self, room: str, after_rev: int, upto_seq: int, limit: int) -> tuple[list[Update], bool]:
        """For a resuming client: one update event per message with ``seq <= upto_seq``
        changed after ``after_rev``, in rev order, at most ``limit`` (the newest), and
        whether there were more (the client then reloads instead of patching)."""

    async def epochs(self, rooms: list[str]) -> list[str | None]:
        """Each room's epoch (None for a room the store does not have): a change means
        its history was lost (Redis restarted empty) and began again."""
        infos = [await self.room_info(r, create=False) for r in rooms]
        return [i.epoch if i else None for i in infos]

    async def renew_epoch(self, room: str, old: str) -> str:
        """Give the room a new epoch if it still has ``old`` (part of its history was
        lost); returns the epoch now. Every instance that noticed the loss agrees on one."""
        info = await self.room_info(room, create=False)
        return info.epoch if info else old

    async def epoch_start(self, room: str) -> tuple[int, int]:
        """The seq and rev the room's current epoch began after: what an archive kept of
        the history before it (0, 0 without one)."""
        return 0, 0

    async def last_revs(self, rooms: list[str]) -> list[int]:
        """The newest update ``rev`` of each room (0 if none); the update relay's sweep."""
        infos = [await self.room_info(r, create=False) for r in rooms]
        return [i.last_rev if i else 0 for i in infos]

    @abc.abstractmethod
    async def room_info(self, room: str, create: bool = True) -> RoomInfo | None:
        """The room's epoch and last seq; creates the room unless ``create`` is False."""

    @abc.abstractmethod
    async def latest(self, room: str, limit: int, before_seq: int | None = None) -> tuple[list[Message], bool]:
        """Up to ``limit`` messages older than ``before_seq`` (or the newest),
        oldest first, and whether older ones remain."""

    @abc.abstractmethod
    async def after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        """Messages with ``seq > after_seq``, oldest first, at most ``limit``."""

    async def last_seqs(self, rooms: list[str]) -> list[int]:
        """The newest ``seq`` of each room (0 if unknown); the relay's gap sweep."""
        infos = [await self.room_info(r, create=False) for r in rooms]
        return [i.last_seq if i else 0 for i in infos]

    @abc.abstractmethod
    async def mark_read(self, user_id: str, room: str, seq: int, first: bool = False) -> int:
        """Record that ``user_id`` has read ``room`` up to ``seq``; it only moves forward.
        With ``first`` (a join) it is set only where the user has no mark yet, so a room
        joined for the first time starts read. Returns the user's mark now."""

    @abc.abstractmethod
    async def reads_of(self, user_id: str) -> dict[str, int]:
        """Every room ``user_id`` has a read mark in, and the mark."""

    @abc.abstractmethod
    async def access(self, room: str) -> RoomAccess | None:
        """How ``room`` is closed (None: it is public, or does not exist)."""

    @abc.abstractmethod
    async def create_private(self, room: str, access: RoomAccess, members: list[str]) -> bool:
        """Create ``room`` private with these members; False when a room of that name
        exists already (a public room never becomes private, nor a private one public)."""

    @abc.abstractmethod
    async def set_member(self, room: str, user_id: str, member: bool) -> bool:
        """Add or remove a member of a private room; whether that changed anything."""

    @abc.abstractmethod
    async def is_member(self, room: str, user_id: str) -> bool: ...

    @abc.abstractmethod
    async def members_of(self, room: str) -> list[str]: ...

    @abc.abstractmethod
    async def private_rooms(self) -> set[str]:
        """Every private room and DM (the public directory leaves them out)."""

    @abc.abstractmethod
    async def private_rooms_of(self, user_id: str) -> list[str]:
        """The private rooms and DMs ``user_id`` is a member of."""

    @abc.abstractmethod
    async def rooms(self) -> list[str]:
        """Every room that exists."""

    async def search(
        self, query: str, rooms: list[str] | None, before: str | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Messages whose text has every word of ``query``, in ``rooms`` only (None: every
        room; the caller passes what ``Chat.readable`` allows), and whether more follow.
        Ranked in windows of the newest matches (``backend.search``); ``before`` is the
        ``cursor`` of the last hit of the previous page. Each hit is the message's current
        state plus ``highlight`` (``[{"text", "match"}]``) and ``cursor``. Edited messages
        are found by their new text, deleted ones never. A store without an index answers
        ``unavailable``."""
        raise ChatError("unavailable", "this store has no search index", 503)
