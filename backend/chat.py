"""The chat service: every action a client can take, whatever its transport.

Socket.IO handlers (``events``), the HTTP API (``http``) and the plain
WebSocket bridge (``bridge``) all call into one ``Chat``; none of them knows
whether the store and presence live in SQLite and memory or in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from backend import search as search_
from backend.auth import Identity
from backend.config import Settings
from backend.fanout import EVICT_EVENT, REVOKE_EVENT, REVOKE_ROOM, Fanout
from backend.lifecycle import Change, Kind
from backend.limits import ConnectLimiter, KeyedBuckets, TokenBucket
from backend.mentions import mention_room, targets
from backend.metrics import Metrics
from backend.models import (
    ChatError,
    CreateRequest,
    DeleteRequest,
    DmRequest,
    EditRequest,
    HistoryRequest,
    JoinRequest,
    LeaveRequest,
    MemberRequest,
    ReactRequest,
    ReadRequest,
    SearchRequest,
    SendRequest,
    TypingRequest,
    parse,
    seq_of,
)
from backend.presence import Presence, User
from backend.relay import Relay, RelayCounts
from backend.store.base import Message, MessageStore, RateLimited, RoomAccess, RoomInfo, StoreUnavailable, Update

log = logging.getLogger(__name__)

Subscriber = Callable[[str, dict[str, Any]], None]
"""A bridge client's sink: ``("message", message)`` or ``("update", update)``, in order."""
RESUME_UPDATES = 1000
"""Changed messages a resuming join patches at most; beyond that it says ``updates_truncated``."""
DIRECTORY_TTL = 1.0
"""Seconds a computed room directory (``GET /api/rooms``) is served before it is counted again."""
PRESENCE_WINDOW = 0.05
"""Seconds over which a room's membership changes share one ``presence`` event."""


@dataclass(slots=True)
class Connection:
    """What the server knows about one socket (Socket.IO or /ws)."""

    user: User
    bucket: TokenBucket
    typing_bucket: TokenBucket
    rooms: set[str] = field(default_factory=set)
    joining: set[str] = field(default_factory=set)
    """Rooms whose join is in flight (reserved before its first await)."""
    session: str | None = None
    """The sign-in session of the token it connected with (None: a guest or an operator's token)."""


def dm_room(a: str, b: str) -> str:
    """The one room of two users' direct messages, whichever of them asks (a slug)."""
    return "dm-" + hashlib.sha256("\n".join(sorted((a, b))).encode()).hexdigest()[:32]


def receipt_key(room: str) -> str:
    """Where a DM member's read receipt is kept: a read mark under a name no room can have."""
    return room + ":receipt"


def room_exists(room: str) -> ChatError:
    return ChatError("room_exists", f"a room named {room!r} exists already", 409)


def now_ms() -> int:
    return int(time.time() * 1000)


class Chat:
    def __init__(
        self, settings: Settings, store: MessageStore, presence: Presence, sio: socketio.AsyncServer, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.store = store
        self.presence = presence
        self.sio = sio
        self.metrics = metrics
        counts = RelayCounts(replayed=metrics.replayed.inc, held=metrics.held.inc)
        self.relay = Relay(store, self._deliver, on_regress=self._regressed, counts=counts)
        self.updates = Relay(store, self._deliver_update, stream="updates", on_regress=self._regressed, counts=counts)
        self._access_cache: dict[str, RoomAccess | None] = {}
        """Each room's kind once looked up (it never changes once the room exists)."""
        self._epochs: dict[str, str] = {}
        """The epoch of each room with a local listener: when the store's differs, its
        history was lost and began again, and the relays start over (``_new_epoch``)."""
        self._early_updates: dict[str, list[Update]] = {}
        """Updates to messages this instance has not delivered yet (their message is
        still in a relay gap): sent right after their message."""
        self.fanout = Fanout(sio, self._flushed, linger=settings.fanout_linger_ms / 1000)
        self.connections: dict[str, Connection] = {}
        self._listeners: dict[str, int] = defaultdict(int)  # room -> local sockets + bridge clients
        self._subscribers: dict[str, set[Subscriber]] = defaultdict(set)
        self._presence_pending: dict[str, tuple[list[User], list[User]]] = {}
        self._presence_retry: list[tuple[str, str, User]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.notify_local: Callable[[Message], None] | None = None
        """Set in embedded mode: hands a stored message to the in-process notifier."""
        self.user_limits = None if store.limits_users else KeyedBuckets(settings.rate, settings.rate_burst)
        """Messages per user in embedded mode; a fleet store enforces it in its append."""
        self.connect_limiter = ConnectLimiter(settings.connects_per_minute, lambda: getattr(store, "redis", None))
        self.identity: Identity | None = None
        """Tokens and guests (set by the app, with the account store)."""
        self._directory: tuple[float, list[dict[str, Any]]] | None = None
        self._directory_flight: asyncio.Future[list[dict[str, Any]]] | None = None
        self.closers: dict[str, Callable[[], None]] = {}
        """How to end each ``/ws`` bridge connection (Socket.IO ones end through ``sio``)."""

    # -- connections ----------------------------------------------------------

    async def admit(self, address: str) -> None:
        """Refuse a new connection when this instance is full or ``address`` opens
        too many; checked before the credentials, so guessing tokens is limited too."""
        if len(self.connections) >= self.settings.max_connections:
            raise ChatError("too_many_connections", "this server is full, try another or retry shortly", 503)
        if not await self.connect_limiter.allow(address):
            raise ChatError("rate_limited", "too many new connections from this address, retry in a minute", 429)

    def open_connection(self, sid: str, user: User, session: str | None = None) -> Connection:
        s = self.settings
        conn = Connection(user, TokenBucket(s.rate, s.rate_burst), TokenBucket(5.0, 10), session=session)
        self.connections[sid] = conn
        self.metrics.connected.inc()
        return conn

    def connection(self, sid: str) -> Connection:
        conn = self.connections.get(sid)
        if conn is None:
            raise ChatError("unauthorized", "not connected")
        return conn

    async def member(self, sid: str, room: str) -> Connection:
        """The connection of ``sid``, which must have joined ``room``. Joining checked the
        right to read it, and losing that right (a kick) takes the room off the
        connection, so the hot path asks nothing more; a refusal says which it is."""
        conn = self.connection(sid)
        if room not in conn.rooms:
            await self.check_readable(conn.user, room)
            raise ChatError("not_in_room", f"join {room!r} first: not in that room")
        return conn

    # -- private rooms and direct messages ----------------------------------------------

    async def room_access(self, room: str) -> RoomAccess | None:
        """How ``room`` is closed (None: public). A room's kind never changes once it exists,
        so the answer is kept: after the first look, a join of a busy room asks nothing."""
        if room in self._access_cache:
            return self._access_cache[room]
        access = await self._store_call(self.store.access(room))
        if access is not None or await self._store_call(self.store.room_info(room, create=False)) is not None:
            if len(self._access_cache) > 100_000:
                self._access_cache.clear()
            self._access_cache[room] = access
        return access

    async def check_readable(self, user: User, room: str) -> RoomAccess | None:
        access = await self.room_access(room)
        if access is not None and not await self._store_call(self.store.is_member(room, user["id"])):
            raise ChatError("forbidden", f"{room!r} is private: members only", 403)
        return access

    def _account(self, user: User) -> None:
        if user.get("guest") or not user.get("username"):
            raise ChatError("forbidden", "sign in with an account for private rooms and direct messages", 403)

    async def _account_named(self, username: str) -> Any:
        assert self.identity is not None
        try:
            account = await self.identity.accounts.by_username(username)
        except StoreUnavailable:
            raise ChatError("unavailable", "accounts are unreachable right now, retry shortly", 503) from None
        if account is None:
            raise ChatError("not_found", f"no account {username!r}", 404)
        return account

    async def create(self, sid: str, data: Any) -> dict[str, Any]:
        """Create a room; a private one has its creator as owner and first member."""
        req = parse(CreateRequest, data)
        conn = self.connection(sid)
        exists = room_exists(req.room)
        if not req.private:
            if await self._store_call(self.store.room_info(req.room, create=False)) is not None:
                raise exists
            await self._store_call(self.store.room_info(req.room))
            return {"ok": True, "room": req.room, "private": False}
        self._account(conn.user)
        created = await self._store_call(
            self.store.create_private(req.room, RoomAccess(owner=conn.user["id"]), [conn.user["id"]])
        )
        if not created:
            raise exists
        self._access_cache.pop(req.room, None)
        await self._tell_membership(conn.user["id"], {"room": req.room, "private": True, "dm": False, "added": True})
        return {"ok": True, "room": req.room, "private": True}

    async def dm(self, sid: str, data: Any) -> dict[str, Any]:
        """The direct-message room of two accounts: the same whichever of the two asks."""
        req = parse(DmRequest, data)
        conn = self.connection(sid)
        self._account(conn.user)
        peer = await self._account_named(req.user)
        if peer.id == conn.user["id"]:
            raise ChatError("bad_request", "that is you: message someone else", 400)
        room = dm_room(conn.user["id"], peer.id)
        pair = [conn.user["id"], peer.id]
        if await self.room_access(room) is None:
            created = await self._store_call(self.store.create_private(room, RoomAccess(dm=True), pair))
            if not created and await self._store_call(self.store.access(room)) is None:
                raise room_exists(room)  # a public room took the name: cannot happen with dm- names
            self._access_cache.pop(room, None)
        me = {"id": conn.user["id"], "name": conn.user["name"], "username": conn.user.get("username")}
        them = peer.public()
        await self._tell_membership(peer.id, {"room": room, "private": True, "dm": True, "added": True, "peer": me})
        await self._tell_membership(
            conn.user["id"], {"room": room, "private": True, "dm": True, "added": True, "peer": them}
        )
        return {"ok": True, "room": room, "peer": them}

    async def _owner_or_moderator(self, conn: Connection, room: str) -> RoomAccess:
        access = await self.check_readable(conn.user, room)
        if access is None or access.dm:
            raise ChatError("bad_request", f"{room!r} is not a private room", 400)
        if access.owner != conn.user["id"] and not self._moderates(conn.user):
            raise ChatError("forbidden", "only the room's owner or a moderator can do that", 403)
        return access

    async def invite(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(MemberRequest, data)
        conn = self.connection(sid)
        await self._owner_or_moderator(conn, req.room)
        account = await self._account_named(req.user)
        if await self._store_call(self.store.set_member(req.room, account.id, True)):
            await self._tell_membership(account.id, {"room": req.room, "private": True, "dm": False, "added": True})
        return {"ok": True}

    async def kick(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(MemberRequest, data)
        conn = self.connection(sid)
        access = await self._owner_or_moderator(conn, req.room)
        account = await self._account_named(req.user)
        if account.id == access.owner:
            raise ChatError("forbidden", "the owner cannot be removed", 403)
        await self._remove_member(req.room, account.id)
        return {"ok": True}

    async def _remove_member(self, room: str, user_id: str) -> None:
        """End a membership: the store first (nothing can rejoin), then every socket of that
        user leaves the room at once, on this instance and, through pub/sub, all others."""
        await self._store_call(self.store.set_member(room, user_id, False))
        event = {"room": room, "user": user_id}
        await self.evict_here(event)
        await self.sio.emit(EVICT_EVENT, event, room=REVOKE_ROOM)
        await self._tell_membership(user_id, {"room": room, "removed": True})

    async def evict_here(self, event: dict[str, Any]) -> None:
        """This instance's connections of ``event["user"]`` leave ``event["room"]``."""
        room, user_id = event.get("room"), event.get("user")
        if not isinstance(room, str) or not isinstance(user_id, str):
            return
        for sid, conn in list(self.connections.items()):
            if conn.user["id"] != user_id or room not in conn.rooms:
                continue
            closer = self.closers.get(sid)
            if closer is not None:  # a /ws bridge lives in one room: it ends
                closer()
                continue
            await self.sio.leave_room(sid, room)
            await self._leave_room(sid, conn, room)

    async def _tell_membership(self, user_id: str, event: dict[str, Any]) -> None:
        """A user's rooms changed (invited, removed, a new DM): every connection of theirs hears it."""
        await self.sio.emit("membership", event, room="user:" + user_id)

    async def leave(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(LeaveRequest, data)
        conn = await self.member(sid, req.room)
        await self.sio.leave_room(sid, req.room)
        await self._leave_room(sid, conn, req.room)
        access = await self.room_access(req.room)
        if req.forget and access is not None and not access.dm:
            await self._remove_member(req.room, conn.user["id"])  # leaving a private room for good
        return {"ok": True}

    async def close_connection(self, sid: str) -> None:
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        self.metrics.connected.dec()
        for room in list(conn.rooms):
            try:
                await self._leave_room(sid, conn, room)
            except ChatError as exc:  # the store is down: remove it from presence later
                log.warning("presence cleanup for %s in %s deferred: %s", sid, room, exc.detail)
                self._presence_retry.append((room, sid, conn.user))

    async def revoke_session(self, session: str) -> None:
        """A session ended (logout): close its connections here and on every other instance."""
        await self.end_session_here(session)
        await self.sio.emit(REVOKE_EVENT, {"session": session}, room=REVOKE_ROOM)

    async def end_session_here(self, session: str) -> None:
        for sid, conn in list(self.connections.items()):
            if conn.session != session:
                continue
            closer = self.closers.get(sid)
            if closer is not None:
                closer()
            else:
                await self.sio.disconnect(sid)

    # -- local listeners and delivery -------------------------------------------

    def _flushed(self, delivered: int) -> None:
        self.metrics.messages_out.inc(delivered)
        self.metrics.fanout_flushes.inc()

    def _deliver(self, room: str, message: Message) -> None:
        """The relay's output: one message, in order, to every local listener."""
        self.fanout.emit(room, "message", message)
        subscribers = self._subscribers.get(room)
        if subscribers:
            for subscriber in tuple(subscribers):
                subscriber("message", message)
            self.metrics.messages_out.inc(len(subscribers))
        self.metrics.fanout_latency.observe(max(0.0, time.time() - message["ts"] / 1000))
        early = self._early_updates.get(room)
        if early:
            waiting = [u for u in early if u["message"]["seq"] > message["seq"]]
            for update in early:
                # an update older than the state the message arrived with adds nothing
                if update["message"]["seq"] == message["seq"] and update["rev"] > message.get("rev", 0):
                    self._emit_update(room, update)
            if waiting:
                self._early_updates[room] = waiting
            else:
                del self._early_updates[room]

    def _deliver_update(self, room: str, update: Update) -> None:
        """The update relay's output: in rev order, and never before its message."""
        if update["message"]["seq"] > self.relay.last(room):
            self._early_updates.setdefault(room, []).append(update)
            return
        self._emit_update(room, update)

    def _emit_update(self, room: str, update: Update) -> None:
        self.fanout.emit(room, "update", update)
        for subscriber in tuple(self._subscribers.get(room, ())):
            subscriber("update", update)

    def _listen(self, room: str, info: RoomInfo) -> tuple[int, int]:
        """A local listener arrives; returns the seq and rev live delivery continues after."""
        self._listeners[room] += 1
        self._epochs.setdefault(room, info.epoch)
        self.relay.track(room, info.last_seq)
        self.updates.track(room, info.last_rev)
        self.metrics.rooms.set(len(self._listeners))
        return self.relay.last(room), self.updates.last(room)

    def _unlisten(self, room: str) -> None:
        self._listeners[room] -= 1
        if self._listeners[room] <= 0:
            del self._listeners[room]
            self.relay.untrack(room)
            self.updates.untrack(room)
            self._early_updates.pop(room, None)
            self._epochs.pop(room, None)
        self.metrics.rooms.set(len(self._listeners))

    async def _new_epoch(self, room: str, epoch: str) -> None:
        """A new epoch found by the sweep or a join (its announcement was missed)."""
        kept_seq, kept_rev = await self._store_call(self.store.epoch_start(room))
        self.apply_epoch({"room": room, "epoch": epoch, "kept_seq": kept_seq, "kept_rev": kept_rev})

    def apply_epoch(self, event: dict[str, Any]) -> None:
        """The room's stored history was lost and began again (Redis came back empty):
        tell its listeners which ids still apply (those the archive kept, ``kept_seq``),
        then relay the new history from there, so every message acknowledged since is
        delivered once. Announced by the instance that began the epoch, before its first message."""
        room, epoch = event.get("room"), event.get("epoch")
        kept_seq, kept_rev = event.get("kept_seq"), event.get("kept_rev")
        if not isinstance(room, str) or not isinstance(epoch, str):
            return
        if not isinstance(kept_seq, int) or not isinstance(kept_rev, int):
            return
        if room not in self._epochs or self._epochs[room] == epoch:
            return  # no listener here, or this epoch is known already
        log.warning(
            "room %s has a new epoch %s (stored history was lost): relaying after seq %d", room, epoch, kept_seq
        )
        self._epochs[room] = epoch
        self.relay.reset(room, kept_seq)
        self.updates.reset(room, kept_rev)
        self._early_updates.pop(room, None)
        event = {"room": room, "epoch": epoch, "kept_seq": kept_seq, "kept_rev": kept_rev}
        self.fanout.emit(room, "epoch", event)
        for subscriber in tuple(self._subscribers.get(room, ())):
            subscriber("epoch", event)

    def _regressed(self, room: str) -> None:
        """A relay found the store behind what it delivered: part of the room's history
        was lost (a Redis that came back from an older copy). Begin a new epoch."""
        task = asyncio.get_running_loop().create_task(self._renew_epoch(room))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _renew_epoch(self, room: str) -> None:
        known = self._epochs.get(room)
        if known is None:
            return
        try:
            epoch = await self.store.renew_epoch(room, known)
        except StoreUnavailable as exc:
            log.warning("new epoch of %s not started yet: %s", room, exc)
            return
        await self._new_epoch(room, epoch)

    async def sweep(self) -> None:
        """Catch up every room whose store is ahead of what was relayed, messages and
        updates, after starting over in any room whose history began again."""
        rooms = list(self._epochs)
        for room, epoch in zip(rooms, await self.store.epochs(rooms), strict=True):
            if epoch is not None and self._epochs.get(room, epoch) != epoch:
                await self._new_epoch(room, epoch)
        await self.relay.sweep()
        await self.updates.sweep()

    def sweep_soon(self) -> None:
        self.relay.sweep_soon()
        self.updates.sweep_soon()

    def subscribe(self, room: str, subscriber: Subscriber) -> None:
        """A listener that is not a Socket.IO socket (the ``/ws`` bridge): the
        instance hears the room's channel for it too."""
        subs = self._subscribers[room]
        if subscriber not in subs:
            subs.add(subscriber)
            self.sio.manager.hold(room)

    def unsubscribe(self, room: str, subscriber: Subscriber) -> None:
        subs = self._subscribers.get(room)
        if subs is not None and subscriber in subs:
            subs.discard(subscriber)
            self.sio.manager.release(room)
            if not subs:
                del self._subscribers[room]

    # -- actions --------------------------------------------------------------

    async def join(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(JoinRequest, data)
        conn = self.connection(sid)
        room = req.room
        if room in conn.joining:
            raise ChatError("bad_request", f"a join of {room!r} is already in progress")
        rejoin = room in conn.rooms
        # a join in flight is in ``joining`` and, from ``_join_room`` on, in ``rooms`` too: count it once
        if not rejoin and len(conn.rooms | conn.joining) >= self.settings.max_rooms_per_connection:
            raise ChatError("too_many_rooms", f"at most {self.settings.max_rooms_per_connection} rooms per connection")
        conn.joining.add(room)  # reserved before the first await: concurrent joins see it
        try:
            access = await self.check_readable(conn.user, room)
            async with self._hearing(room, not rejoin):
                info = await self._store_call(self.store.room_info(room))
                if self.connections.get(sid) is not conn:
                    raise ChatError("unauthorized", "disconnected while joining")
                if not rejoin:
                    # Deliver what is already queued first: the history below includes it.
                    self.fanout.flush()
                    await self.sio.enter_room(sid, room)
                history, upto, upto_rev = await self._join_room(sid, conn, room, info, req.since, rejoin)
        finally:
            conn.joining.discard(room)
        ack = {"ok": True, "room": room, "epoch": info.epoch, "last_seq": upto, "rev": upto_rev, "history": history}
        if req.since is not None:
            # changes the client missed to the messages it already holds
            changed, more = await self._store_call(
                self.store.changed_since(room, req.rev or 0, min(seq_of(req.since), upto), RESUME_UPDATES)
            )
            ack["updates"] = [u for u in changed if u["rev"] <= upto_rev]
            if more:
                ack["updates_truncated"] = True
        # a room joined for the first time starts read; after that, the mark says what is new
        read_seq = await self._store_call(self.store.mark_read(conn.user["id"], room, upto, first=True))
        ack["read_seq"] = read_seq
        ack["unread"] = max(0, upto - read_seq)
        ack["members"] = await self._store_call(self.presence.members(room))
        ack["you"] = conn.user
        if access is not None:
            ack["private"] = True
            ack["dm"] = access.dm
            ack["owner"] = access.owner
            if access.dm:
                peers = [m for m in await self._store_call(self.store.members_of(room)) if m != conn.user["id"]]
                marks = await self._store_call(self.store.reads_of(peers[0])) if peers else {}
                ack["peer_read_seq"] = marks.get(receipt_key(room), 0)
        if self._moderates(conn.user):
            ack["moderator"] = True
        return ack

    async def _join_room(
        self, sid: str, conn: Connection, room: str, info: RoomInfo, since: str | None, rejoin: bool
    ) -> tuple[list[Message], int, int]:
        """Enter ``room`` for a listener; history up to where live delivery takes over,
        and the seq and update rev it takes over after."""
        if self._epochs.get(room, info.epoch) != info.epoch:
            await self._new_epoch(room, info.epoch)
        if rejoin:
            upto, upto_rev = self.relay.last(room), self.updates.last(room)
        else:
            upto, upto_rev = self._listen(room, info)
        conn.rooms.add(room)
        if since is not None and seq_of(since) <= upto:
            history = await self._store_call(self.store.after(room, seq_of(since), self.settings.history_limit))
            history = [m for m in history if m["seq"] <= upto]
        else:
            history, _ = await self._store_call(self.store.latest(room, self.settings.page_size, upto + 1))
        if not rejoin:
            first = await self._store_call(self.presence.add(room, sid, conn.user))
            if self.connections.get(sid) is not conn or room not in conn.rooms:
                # disconnected or left while this join was in flight: that cleanup
                # ran before the add above, so undo it here, or it stays a ghost
                await self._store_call(self.presence.remove(room, sid, conn.user))
                raise ChatError("unauthorized", "disconnected while joining")
            if first:
                await self._emit_presence(room, joined=conn.user)
        return history, upto, upto_rev

    async def _leave_room(self, sid: str, conn: Connection, room: str) -> None:
        conn.rooms.discard(room)
        self._unlisten(room)
        if await self._store_call(self.presence.remove(room, sid, conn.user)):
            await self._emit_presence(room, left=conn.user)

    async def _emit_presence(self, room: str, joined: User | None = None, left: User | None = None) -> None:
        """Announce a membership change, coalesced per room over ``PRESENCE_WINDOW``.

        One event per change would send the whole member list to every member
        for every join: a room of n filling at once (after a restart, say)
        costs n^2. Changes within the window share one event and one read of
        the member list; ``joined``/``left`` name the latest change and
        ``joined_all``/``left_all`` list them all when there were several."""
        pending = self._presence_pending.get(room)
        if pending is None:
            pending = self._presence_pending[room] = ([], [])
            asyncio.get_running_loop().call_later(PRESENCE_WINDOW, self._spawn_presence_flush, room)
        if joined is not None:
            pending[0].append(joined)
        if left is not None:
            pending[1].append(left)

    def _spawn_presence_flush(self, room: str) -> None:
        task = asyncio.get_running_loop().create_task(self._flush_presence(room))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _flush_presence(self, room: str) -> None:
        joined, left = self._presence_pending.pop(room, ([], []))
        try:
            event: dict[str, Any] = {"room": room, "members": await self.presence.members(room)}
        except StoreUnavailable as exc:
            log.warning("presence of %s not announced: %s", room, exc)
            return
        for key, users in (("joined", joined), ("left", left)):
            if users:
                event[key] = users[-1]
                if len(users) > 1:
                    event[key + "_all"] = users
        await self.sio.emit("presence", event, room=room)

    async def message(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(SendRequest, data)
        conn = await self.member(sid, req.room)
        if not conn.bucket.take():
            raise ChatError("rate_limited", f"slow down: retry in {conn.bucket.retry_after():.2f}s", 429)
        return await self.send(conn.user, req.room, req.text, req.client_id, req.reply_to)

    async def send(
        self, user: User, room: str, text: str, client_id: str | None, reply_to: str | None = None
    ) -> dict[str, Any]:
        """Store, then fan out; the caller's ack says the message is stored."""
        self._check_text(text)
        self._limit_user(user)
        reply_seq = seq_of(reply_to) if reply_to is not None else None
        started = time.perf_counter()
        try:
            result = await self._store_call(
                self.store.append(room, user, text, client_id or uuid.uuid4().hex, now_ms(), reply_seq)
            )
        except RateLimited as exc:
            raise ChatError("rate_limited", f"slow down: retry in {exc.retry_after:.2f}s", 429) from None
        self.metrics.append_latency.observe(time.perf_counter() - started)
        message = result.message
        if result.created:
            self.metrics.messages_in.inc()
            if result.announced:  # the store published it to the fleet: deliver here ourselves
                self.relay.accept(message)
            else:
                await self.sio.emit("message", message, room=room)
            if self.notify_local is not None:
                self.notify_local(message)
        else:
            self.metrics.duplicates.inc()
        return {"ok": True, "id": message["id"], "seq": message["seq"], "ts": message["ts"]}

    def _check_text(self, text: str) -> None:
        if len(text) > self.settings.max_message_chars:
            raise ChatError("too_large", f"text is limited to {self.settings.max_message_chars} characters", 413)

    def _limit_user(self, user: User) -> None:
        if self.user_limits is not None and not self.user_limits.take(user["id"]):
            raise ChatError("rate_limited", "slow down: too many messages from this user", 429)

    async def edit(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(EditRequest, data)
        conn = await self._member_sending(sid, req.room)
        return await self.change(conn.user, req.room, req.id, "edit", req.client_id, text=req.text)

    async def delete(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(DeleteRequest, data)
        conn = await self._member_sending(sid, req.room)
        return await self.change(conn.user, req.room, req.id, "delete", req.client_id)

    async def react(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(ReactRequest, data)
        conn = await self._member_sending(sid, req.room)
        return await self.change(conn.user, req.room, req.id, "reaction", req.client_id, emoji=req.emoji, on=req.on)

    def _moderates(self, user: User) -> bool:
        """A moderator (``CHAT_MODERATORS``) may delete anyone's message; guests never are."""
        username = user.get("username")
        return isinstance(username, str) and username.casefold() in self.settings.moderator_set

    async def _member_sending(self, sid: str, room: str) -> Connection:
        """A member of ``room`` within its connection's message rate (changes count as sends)."""
        conn = await self.member(sid, room)
        if not conn.bucket.take():
            raise ChatError("rate_limited", f"slow down: retry in {conn.bucket.retry_after():.2f}s", 429)
        return conn

    async def change(
        self,
        user: User,
        room: str,
        message_id: str,
        kind: Kind,
        client_id: str | None,
        text: str = "",
        emoji: str = "",
        on: bool = True,
    ) -> dict[str, Any]:
        """Edit, delete or react to a stored message, then announce its new state
        to the room as an ``update``; acked like a send (idempotent on ``client_id``)."""
        if kind == "edit":
            self._check_text(text)
        self._limit_user(user)
        username = user.get("username")
        moderator = isinstance(username, str) and username.casefold() in self.settings.moderator_set
        change = Change(
            room,
            seq_of(message_id),
            kind,
            dict(user),
            client_id or uuid.uuid4().hex,
            now_ms(),
            text,
            emoji,
            on,
            moderator,
        )
        try:
            result = await self._store_call(self.store.change(change))
        except RateLimited as exc:
            raise ChatError("rate_limited", f"slow down: retry in {exc.retry_after:.2f}s", 429) from None
        update = result.update
        if result.created:
            self.metrics.changes.labels(kind).inc()
            if result.announced:  # published to the fleet by the store: deliver here ourselves
                self.updates.accept(update)
            else:
                await self.sio.emit("update", update, room=room)
        return {"ok": True, "id": update["id"], "rev": update["rev"], "message": update["message"]}

    async def typing(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(TypingRequest, data)
        conn = await self.member(sid, req.room)
        if not conn.typing_bucket.take():
            raise ChatError("rate_limited", "too many typing updates", 429)
        await self.sio.emit(
            "typing", {"room": req.room, "user": conn.user, "typing": req.typing}, room=req.room, skip_sid=sid
        )
        return {"ok": True}

    async def read(self, sid: str, data: Any) -> dict[str, Any]:
        """The user has read ``room`` up to ``seq``: kept (forward only) and told to the
        user's other connections, on every instance, so their unread counts clear too."""
        req = parse(ReadRequest, data)
        conn = await self.member(sid, req.room)
        if not conn.typing_bucket.take():
            raise ChatError("rate_limited", "too many read updates", 429)
        seq = min(req.seq, self.relay.last(req.room))
        mark = await self._store_call(self.store.mark_read(conn.user["id"], req.room, seq))
        if mark == seq:
            event = {"room": req.room, "seq": mark}
            await self.sio.emit("read", event, room=self.user_room_of(conn.user), skip_sid=sid)
        access = await self.room_access(req.room)
        if req.receipt and access is not None and access.dm:
            # the receipt mark moves only while receipts are on: switched off, the peer sees no more
            shown = await self._store_call(self.store.mark_read(conn.user["id"], receipt_key(req.room), mark))
            event = {"room": req.room, "user": conn.user["id"], "seq": shown}
            await self.sio.emit("receipt", event, room=req.room)
        return {"ok": True, "read_seq": mark}

    async def readable(self, user: User | None, rooms: list[str]) -> list[str]:
        """Those of ``rooms`` that ``user`` (None: anonymous) may read (search, the room
        list): public rooms, and private rooms and DMs only for their members."""
        mine = await self._store_call(self.store.private_rooms_of(user["id"])) if user else []
        return await self._readable_by(mine, rooms)

    async def _readable_by(self, mine: list[str], rooms: list[str]) -> list[str]:
        """Those of ``rooms`` that are public or among ``mine`` (a user's private rooms)."""
        private = await self._store_call(self.store.private_rooms())
        joined = set(mine)
        return [room for room in rooms if room not in private or room in joined]

    async def my_rooms(self, user: User) -> list[dict[str, Any]]:
        """The rooms a user has joined, with how far they read and what is unread."""
        marks = {r: s for r, s in (await self._store_call(self.store.reads_of(user["id"]))).items() if ":" not in r}
        private = await self._store_call(self.store.private_rooms_of(user["id"]))
        names = sorted(set(await self._readable_by(private, list(marks))) | set(private))
        lasts = await self._store_call(self.store.last_seqs(names))
        listed = []
        for name, last in zip(names, lasts, strict=True):
            read = marks.get(name, 0)
            entry: dict[str, Any] = {"room": name, "unread": max(0, last - read), "last_seq": last, "read_seq": read}
            access = await self.room_access(name) if name in private else None
            entry["private"] = access is not None
            entry["dm"] = access is not None and access.dm
            if entry["dm"]:
                entry["peer"] = await self._dm_peer(name, user["id"])
            listed.append(entry)
        return listed

    async def _dm_peer(self, room: str, me: str) -> dict[str, Any] | None:
        """The other person of a DM, as a user object."""
        others = [m for m in await self._store_call(self.store.members_of(room)) if m != me]
        if not others or self.identity is None:
            return None
        try:
            account = await self.identity.accounts.by_id(others[0])
        except StoreUnavailable:
            return None
        return None if account is None else account.public()

    async def history(self, sid: str, data: Any) -> dict[str, Any]:
        req = parse(HistoryRequest, data)
        conn = self.connection(sid)
        messages, more = await self.page(req.room, req.before, req.limit, conn.user)
        return {"ok": True, "messages": messages, "more": more}

    async def page(self, room: str, before: str | None, limit: int, user: User | None) -> tuple[list[Message], bool]:
        """A page of history older than ``before``; ``not_found`` for a room that never
        existed, ``forbidden`` for a private one ``user`` (None: anonymous) is not in."""
        if await self._store_call(self.store.room_info(room, create=False)) is None:
            raise ChatError("not_found", f"no room {room!r}", 404)
        if user is None:
            if await self.room_access(room) is not None:
                raise ChatError("forbidden", f"{room!r} is private: members only", 403)
        else:
            await self.check_readable(user, room)
        before_seq = seq_of(before) if before is not None else None
        return await self._store_call(self.store.latest(room, limit, before_seq))

    async def rooms(self) -> list[dict[str, Any]]:
        """The room directory, computed at most once per ``DIRECTORY_TTL`` however many ask.

        Every open tab polls it; counting each room's members for each request
        saturated an instance at 5,000 tabs (bench/README.md, scenario e), so
        concurrent requests share one computation and the answer may be a second old.
        """
        cached = self._directory
        if cached is not None and time.monotonic() - cached[0] < DIRECTORY_TTL:
            return cached[1]
        if self._directory_flight is None or self._directory_flight.done():
            self._directory_flight = asyncio.ensure_future(self._list_rooms())
        return await asyncio.shield(self._directory_flight)

    async def rooms_for(self, user: User | None) -> list[dict[str, Any]]:
        """The directory as ``user`` (None: anonymous) may see it: the public rooms, and
        the private rooms and DMs they are in. Nobody else learns a private room's name."""
        listed = await self.rooms()
        if user is None:
            return listed
        mine = await self._store_call(self.store.private_rooms_of(user["id"]))
        if not mine:
            return listed
        counts = await self._store_call(self.presence.counts(mine))
        return sorted([*listed, *({"name": n, "members": counts.get(n, 0)} for n in mine)], key=lambda r: r["name"])

    async def _list_rooms(self) -> list[dict[str, Any]]:
        names = await self.readable(None, await self._store_call(self.store.rooms()))
        counts = await self._store_call(self.presence.counts(names))
        listed = [{"name": n, "members": counts.get(n, 0)} for n in names]
        self._directory = (time.monotonic(), listed)
        return listed

    async def search(self, sid: str, data: Any) -> dict[str, Any]:
        """The ``search`` event, within the connection's search rate (searches cost more than sends)."""
        req = parse(SearchRequest, data)
        conn = self.connection(sid)
        search_.allow(self, sid)
        return await self.find(conn.user, req)

    async def find(self, user: User, req: SearchRequest) -> dict[str, Any]:
        """Full-text search over the rooms ``readable`` lets ``user`` read, and no other:
        ``forbidden`` for a ``room`` it does not let through."""
        if req.room is not None:
            if not await self.readable(user, [req.room]):
                raise ChatError("forbidden", f"you may not read {req.room!r}", 403)
            candidates = [req.room]
        else:
            candidates = await self.readable(user, await self._store_call(self.store.rooms()))
        hits, more = await self._store_call(self.store.search(req.q, candidates, req.before, req.limit))
        return {"ok": True, "messages": hits, "more": more, "next": hits[-1]["cursor"] if more and hits else None}

    # -- bridge (plain WebSocket) ---------------------------------------------------

    async def bridge_join(self, sid: str, conn: Connection, room: str, subscriber: Subscriber) -> list[Message]:
        await self.check_readable(conn.user, room)
        async with self._hearing(room):
            info = await self._store_call(self.store.room_info(room))
            self.subscribe(room, subscriber)
            history, _, _ = await self._join_room(sid, conn, room, info, None, rejoin=False)
        return history

    @contextlib.asynccontextmanager
    async def _hearing(self, room: str, first: bool = True) -> AsyncIterator[None]:
        """For a listener's first join: in a fleet, this instance hears the room's
        channel before the history is read (``FleetManager.ready``), so what is
        published meanwhile is in that history or delivered live, never lost
        between the two. The listener's own membership holds the channel after."""
        if not first:
            yield
            return
        self.sio.manager.hold(room)
        try:
            await self.sio.manager.ready(room)
            yield
        finally:
            self.sio.manager.release(room)

    # -- helpers ----------------------------------------------------------------

    async def _store_call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except StoreUnavailable as exc:
            self.metrics.store_errors.inc()
            raise ChatError("unavailable", f"storage is unavailable, retry shortly ({exc})", 503) from None

    async def notify(self, message: Message) -> None:
        """Emit a mention notification to the sockets of everyone the message names
        (in a private room, only to its members: ``mentions.targets``)."""
        private = await self.room_access(message["room"]) is not None
        for room, payload in targets(message, private):
            await self.sio.emit("notification", payload, room=room)

    async def reap_presence(self) -> None:
        """Say goodbye for the members of instances that died without doing so,
        and for this instance's own sockets that left while the store was down."""
        retry, self._presence_retry = self._presence_retry, []
        for index, (room, sid, user) in enumerate(retry):
            try:
                if await self.presence.remove(room, sid, user):
                    await self._emit_presence(room, left=user)
            except StoreUnavailable:
                self._presence_retry.extend(retry[index:])
                raise
        for room, user in await self.presence.reap():
            await self._emit_presence(room, left=user)

    async def heartbeat(self) -> None:
        """Keep this instance's members alive; if another instance reaped them
        (a Redis outage longer than the presence TTL), list them again."""
        if not await self.presence.heartbeat():
            return
        for sid, conn in list(self.connections.items()):
            for room in list(conn.rooms):
                if await self.presence.add(room, sid, conn.user):
                    await self._emit_presence(room, joined=conn.user)

    def mention_room_of(self, user: User) -> str:
        return mention_room(user["name"])

    def user_room_of(self, user: User) -> str:
        """The Socket.IO room of all of a user's connections, on every instance (read marks)."""
        return "user:" + user["id"]


async def run_periodically(interval: float, fn: Callable[[], Any], what: str) -> None:
    """A background loop that survives errors (Redis outages) and logs them once per streak."""
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await fn()
            if failing:
                log.info("%s recovered", what)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("%s failed: %s", what, exc)
            failing = True
