"""The per-tab chat state and the tab's listener (a background task).

Event handlers (the person's clicks and keys) only change state and poke the
listener. The listener owns the tab's Socket.IO connection: it connects,
(re)joins the tab's rooms with `since`, flushes the outbox, fetches older
history and gaps, and applies server events to state inside `async with self`.
Its work is level-triggered (it reconciles the connection with the state), so
it can be cancelled and restarted at any point without losing anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any

import reflex as rx

from frontend import chatlog, registry
from frontend.link import BackendLink, LinkDown, backend_urls

logger = logging.getLogger(__name__)

DEFAULT_ROOM = "general"
MAX_NAME = 32
MAX_ROOM = 64
# Seconds after the last keystroke before this tab says it stopped typing.
TYPING_IDLE = 3.0
# Seconds another user's "typing" lasts without a refresh.
TYPING_SHOWN = 6.0
# Seconds between room directory refreshes.
DIRECTORY_EVERY = 5.0
# Consecutive failed rounds (every backend refused) before the badge says offline.
OFFLINE_AFTER = 3
# A listener whose tab has had no Reflex socket for this long stops by itself
# (a backstop: Reflex cancels on_load tasks when the tab goes; if the tab
# comes back, its on_load starts a new listener).
ORPHAN_AFTER = 2.0
HISTORY_PAGE = 50
# Errors after which resending the same message cannot succeed.
FINAL_ERRORS = {"bad_request", "too_large", "unauthorized", "forbidden"}


@dataclasses.dataclass
class _Connection:
    """What one connection's loop tracks outside the state (none of it survives a reconnect)."""

    # Rooms joined on this connection.
    in_rooms: set[str] = dataclasses.field(default_factory=set)
    # The room this tab told it is typing in ("" when none); the last keystroke.
    typing_room: str = ""
    keyed_room: str = ""
    keyed_at: float = 0.0
    # Whether someone's typing is on show (it expires by time).
    typing_shown: bool = False
    directory: list[dict] = dataclasses.field(default_factory=list)
    directory_at: float = 0.0
    orphan_since: float = 0.0
    # When to try the outbox again after the backend said not now (0: no retry due).
    retry_at: float = 0.0


def _clean_name(value: Any) -> str:
    return " ".join(str(value or "").split())


def _backoff(failures: int) -> float:
    return min(0.25 * 2 ** max(failures - 1, 0), 4.0)


def _tab_alive(token: str) -> bool:
    """Whether Reflex still has a socket for the tab."""
    from frontend.frontend import app

    namespace = app.event_namespace
    return namespace is None or token in namespace.token_to_sid


@dataclasses.dataclass
class RoomInfo:
    """A room in the directory."""

    name: str
    members: int = 0
    unread: int = 0
    joined: bool = False


class ChatState(rx.State):
    """One tab: one user, their rooms, and what the page shows."""

    # The name this tab chats under (empty until picked).
    name: str = ""
    # Why the last name or room entered was refused.
    form_error: str = ""
    # connecting / connected / reconnecting / offline.
    status: str = "offline"
    # The backend this tab is connected to, and the last connect failure.
    backend: str = ""
    link_error: str = ""
    # Rooms this tab has joined, in join order; the one on screen.
    joined: list[str] = rx.field(default_factory=list)
    room: str = ""
    # Every room the backend knows, with member counts (plus joined ones).
    directory: list[RoomInfo] = rx.field(default_factory=list)
    # Unread message counts of joined rooms not on screen.
    unread: dict[str, int] = rx.field(default_factory=dict)
    # What the page shows for the room on screen.
    lines: list[chatlog.ChatLine] = rx.field(default_factory=list)
    members: list[str] = rx.field(default_factory=list)
    typing_names: list[str] = rx.field(default_factory=list)
    has_older: bool = False
    loading_older: bool = False
    # A send the backend refused for good, shown under the composer.
    send_error: str = ""
    # Whether the room drawer is open (phone-width screens only).
    sidebar_open: bool = False
    # The reader's IANA time zone (from the browser), for timestamps.
    tz: str = ""

    # room -> messages sorted by seq (chatlog's log shape).
    _logs: dict[str, list[dict]] = rx.field(default_factory=dict)
    # room -> the room's history epoch when last joined.
    _epochs: dict[str, str] = rx.field(default_factory=dict)
    # room -> whether older history exists before the first message held.
    _more: dict[str, bool] = rx.field(default_factory=dict)
    # room -> members as the backend sent them.
    _members: dict[str, list[dict]] = rx.field(default_factory=dict)
    # room -> {name: time until which they count as typing}.
    _typing: dict[str, dict[str, float]] = rx.field(default_factory=dict)
    # Messages not yet acknowledged: {room, text, client_id}, in send order.
    _outbox: list[dict] = rx.field(default_factory=list)
    # Prefix of this tab's client_ids: tells its own messages apart.
    _tab_key: str = ""
    # Rooms whose older history the person asked for.
    _older_wanted: list[str] = rx.field(default_factory=list)
    _directory_raw: list[dict] = rx.field(default_factory=list)

    # ----- derived -----

    @rx.var
    def typing_text(self) -> str:
        names = self.typing_names
        if not names:
            return ""
        if len(names) == 1:
            return f"{names[0]} is typing…"
        if len(names) <= 3:
            return f"{', '.join(names[:-1])} and {names[-1]} are typing…"
        return "Several people are typing…"

    # ----- helpers that run with the state held -----

    def _show(self, var: str, value: Any) -> None:
        """Assign a page var only when it changed, so no unchanged value is resent."""
        if getattr(self, var) != value:
            setattr(self, var, value)

    def _refresh_view(self) -> None:
        """Recompute what the page shows for the room on screen."""
        room = self.room
        self._show(
            "lines", chatlog.lines(self._logs.get(room, []), self._outbox, room, self.name, self._tab_key, self.tz)
        )
        members = {str(user.get("name", "?")) for user in self._members.get(room, []) if isinstance(user, dict)}
        self._show("members", sorted(members, key=str.lower))
        now = time.time()
        typing = self._typing.get(room, {})
        self._show("typing_names", sorted(n for n, until in typing.items() if until > now and n != self.name))
        self._show("has_older", self._more.get(room, False))
        self._refresh_directory()

    def _refresh_directory(self) -> None:
        counts = {}
        for entry in self._directory_raw:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                members = entry.get("members")
                counts[entry["name"]] = members if isinstance(members, int) else 0
        for room in self.joined:
            # The backend's directory may lag behind a join this tab just made.
            counts[room] = max(counts.get(room, 0), len(self._members.get(room, [])))
        ordered = sorted(counts.items(), key=lambda item: (item[0] not in self.joined, item[0].lower()))
        self._show(
            "directory",
            [
                RoomInfo(name=name, members=count, unread=self.unread.get(name, 0), joined=name in self.joined)
                for name, count in ordered
            ],
        )

    def _apply_message(self, message: dict) -> int:
        """Merge one message; returns how many messages were skipped before it."""
        room = message["room"]
        if room not in self.joined:
            return 0
        log = self._logs.get(room, [])
        prior = chatlog.last_seq(log)
        merged, added = chatlog.merge(log, [message])
        if not added:
            return 0
        self._logs[room] = merged
        if room != self.room:
            self.unread[room] = self.unread.get(room, 0) + 1
        self._typing.get(room, {}).pop(str(message["user"].get("name")), None)
        return chatlog.missing_before(prior, message)

    def _apply_join(self, room: str, ack: dict) -> None:
        epoch = str(ack.get("epoch", ""))
        history = ack.get("history") if isinstance(ack.get("history"), list) else []
        if room in self._epochs and self._epochs[room] != epoch:
            # The room's stored history was lost: ids from before no longer apply.
            self._logs[room] = []
        self._epochs[room] = epoch
        first_join = room not in self._more
        self._logs[room], _ = chatlog.merge(self._logs.get(room, []), history)
        if first_join:
            self._more[room] = len(history) >= HISTORY_PAGE
        if isinstance(ack.get("members"), list):
            self._members[room] = ack["members"]

    # ----- page events -----

    @rx.event
    def set_tz(self, tz: str):
        self.tz = str(tz or "")[:64]
        self._refresh_view()

    @rx.event
    def pick_name(self, form: dict):
        """The start page's form: choose a name and go to the chat."""
        name = _clean_name(form.get("name"))
        if not name or len(name) > MAX_NAME or not name.isprintable():
            self.form_error = f"Pick a name of 1 to {MAX_NAME} printable characters."
            return None
        self.form_error = ""
        if name != self.name:
            self.name = name
            # A new name is a new user: start from a clean slate.
            self._logs, self._epochs, self._more, self._members, self._typing = {}, {}, {}, {}, {}
            self._outbox, self.unread = [], {}
            self.joined = []
        if not self.joined:
            self.joined = [DEFAULT_ROOM]
            self.room = DEFAULT_ROOM
        self._tab_key = self._tab_key or uuid.uuid4().hex[:12]
        self._refresh_view()
        return rx.redirect("/chat")

    @rx.event
    def enter_chat(self):
        """The chat page's first load step: no name, no chat."""
        if not self.name:
            return rx.redirect("/")
        self._tab_key = self._tab_key or uuid.uuid4().hex[:12]
        if not self.joined:
            self.joined = [DEFAULT_ROOM]
        if self.room not in self.joined:
            self.room = self.joined[0]
        self.status = "connecting" if self.status == "offline" else self.status
        self._refresh_view()
        return rx.call_script(
            "Intl.DateTimeFormat().resolvedOptions().timeZone",
            callback=ChatState.set_tz,
        )

    @rx.event
    def toggle_sidebar(self):
        self.sidebar_open = not self.sidebar_open

    @rx.event
    def open_room(self, room: str):
        """Show a room, joining it first if this tab is not in it."""
        self.sidebar_open = False
        room = _clean_name(room)
        if not room or len(room) > MAX_ROOM or not room.isprintable():
            self.form_error = f"Room names have 1 to {MAX_ROOM} printable characters."
            return
        self.form_error = ""
        if room not in self.joined:
            self.joined.append(room)
        self.room = room
        self.unread.pop(room, None)
        self._refresh_view()
        registry.poke(self.router.session.client_token, "poke")

    @rx.event
    def create_room(self, form: dict):
        return ChatState.open_room(form.get("room", ""))

    @rx.event
    def leave_room(self, room: str):
        if room not in self.joined or len(self.joined) == 1:
            return
        self.joined.remove(room)
        for per_room in (self._logs, self._epochs, self._more, self._members, self._typing, self.unread):
            per_room.pop(room, None)
        self._outbox = [item for item in self._outbox if item["room"] != room]
        if self.room == room:
            self.room = self.joined[0]
            self.unread.pop(self.room, None)
        self._refresh_view()
        registry.poke(self.router.session.client_token, "poke")

    @rx.event
    def send(self, form: dict):
        """Queue the composer's text; the listener sends it (again, if need be) once."""
        text = str(form.get("text", ""))
        if not text.strip() or not self.room:
            return
        self.send_error = ""
        self._outbox.append({"room": self.room, "text": text, "client_id": f"{self._tab_key}-{uuid.uuid4().hex}"})
        self._refresh_view()
        registry.poke(self.router.session.client_token, "poke", "sent")

    @rx.event
    def keyed(self, _value: str):
        """A keystroke in the composer (throttled): this tab is typing."""
        registry.poke(self.router.session.client_token, "typing", self.room)

    @rx.event
    def load_older(self):
        if self.room and self.room not in self._older_wanted:
            self._older_wanted.append(self.room)
            self.loading_older = True
            registry.poke(self.router.session.client_token, "poke")

    # ----- the listener -----

    @rx.event(background=True)
    async def listen(self):
        """Hold this tab's connection to the backend until the tab goes away."""
        async with self:
            token = self.router.session.client_token
            name = self.name
        if not name or not token:
            return
        tab = await registry.claim(token)
        urls = backend_urls()
        start = 0
        failures = 0
        link: BackendLink | None = None
        try:
            while True:
                link = BackendLink(urls, name, tab.inbox, start)
                try:
                    await link.connect()
                except LinkDown as exc:
                    failures += 1
                    async with self:
                        self.status = "offline" if failures >= OFFLINE_AFTER else "reconnecting"
                        self.link_error = str(exc)[:300]
                    await link.close()
                    if not _tab_alive(token) and failures >= OFFLINE_AFTER:
                        return
                    await asyncio.sleep(_backoff(failures))
                    continue
                failures = 0
                start = link.index
                async with self:
                    self.status = "connected"
                    self.backend = link.url
                    self.link_error = ""
                try:
                    async for effect in self._session(link, tab):
                        yield effect
                except LinkDown as exc:
                    async with self:
                        self.link_error = str(exc)[:300]
                finally:
                    await link.close()
                if not _tab_alive(token):
                    return
                async with self:
                    self.status = "reconnecting"
                # The next round tries the next backend first: this one just failed.
                start = (start + 1) % len(urls) if len(urls) > 1 else start
        finally:
            registry.release(tab)
            if link is not None:
                await link.close()

    async def _session(self, link: BackendLink, tab: registry.Tab):
        """One connection's life: reconcile, then apply events until it drops.

        Yields frontend events (toasts). Raises LinkDown when the link fails.
        """
        conn = _Connection()
        # The inbox may hold stale items from the previous connection.
        while not tab.inbox.empty():
            tab.inbox.get_nowait()
        await self._reconcile(link, conn)
        while True:
            try:
                items = [await asyncio.wait_for(tab.inbox.get(), timeout=1.0)]
            except TimeoutError:
                items = []
            while not tab.inbox.empty():
                items.append(tab.inbox.get_nowait())
            if any(item[0] == "down" and link.owns(item[1]) for item in items):
                raise LinkDown(f"disconnected from {link.url}")
            now = time.monotonic()
            for item in items:
                if item[0] == "typing":
                    conn.keyed_room, conn.keyed_at = item[1], now
                elif item[0] == "poke" and item[1:] == ("sent",):
                    conn.keyed_at = 0.0
            events = [item for item in items if item[0] == "event"]
            toasts: list[str] = []
            gaps: list[tuple[str, str, int]] = []
            if events:
                async with self:
                    for _, event, data in events:
                        self._on_server_event(event, data, toasts, gaps)
                    self._refresh_view()
                    conn.typing_shown = any(self._typing.values())
            for toast in toasts:
                yield rx.toast.info(toast, duration=6000, position="top-right")
            for room, message_id, count in gaps:
                await self._fetch_gap(link, room, message_id, count)
            if any(item[0] == "poke" for item in items) or (conn.retry_at and now >= conn.retry_at):
                conn.retry_at = 0.0
                await self._reconcile(link, conn)
            await self._typing_tick(link, conn, now)
            presence = any(event[1] == "presence" for event in events)
            if presence or now - conn.directory_at >= DIRECTORY_EVERY:
                conn.directory_at = now
                directory = await link.rooms()
                if directory != conn.directory:
                    conn.directory = directory
                    async with self:
                        self._directory_raw = directory
                        self._refresh_directory()
            if conn.typing_shown and not events:
                async with self:
                    self._expire_typing()
                    self._refresh_view()
                    conn.typing_shown = any(self._typing.values())
            if _tab_alive(tab.token):
                conn.orphan_since = 0.0
            elif not conn.orphan_since:
                conn.orphan_since = now
            elif now - conn.orphan_since > ORPHAN_AFTER:
                logger.warning("chat listener for a tab Reflex no longer knows stopped by itself")
                return

    def _on_server_event(self, event: str, data: Any, toasts: list[str], gaps: list[tuple[str, str, int]]) -> None:
        if not isinstance(data, dict):
            return
        if event == "message" and chatlog.is_message(data):
            skipped = self._apply_message(data)
            if skipped:
                gaps.append((data["room"], data["id"], skipped))
        elif event == "presence" and isinstance(data.get("members"), list):
            room = data.get("room")
            if room in self.joined:
                self._members[room] = data["members"]
        elif event == "typing" and isinstance(data.get("user"), dict):
            room, who = data.get("room"), str(data["user"].get("name", ""))
            if room in self.joined and who:
                typing = self._typing.setdefault(room, {})
                if data.get("typing"):
                    typing[who] = time.time() + TYPING_SHOWN
                else:
                    typing.pop(who, None)
        elif event == "notification" and data.get("kind") == "mention":
            message = data.get("message")
            if chatlog.is_message(message):
                who = str(message["user"].get("name", "someone"))
                toasts.append(f"{who} mentioned you in #{message['room']}: {message['text'][:140]}")

    def _expire_typing(self) -> None:
        now = time.time()
        for room, typing in list(self._typing.items()):
            live = {name: until for name, until in typing.items() if until > now}
            if live != typing:
                self._typing[room] = live

    async def _reconcile(self, link: BackendLink, conn: _Connection) -> None:
        """Bring the connection in line with the state: rooms, outbox, older pages."""
        in_rooms = conn.in_rooms
        async with self:
            joined = list(self.joined)
            since = {room: log[-1]["id"] for room, log in self._logs.items() if log}
            older = [(room, self._logs[room][0]["id"] if self._logs.get(room) else None) for room in self._older_wanted]
        for room in joined:
            if room in in_rooms:
                continue
            request: dict[str, Any] = {"room": room}
            if room in since:
                request["since"] = since[room]
            ack = await link.call("join", request)
            async with self:
                if ack.get("ok"):
                    in_rooms.add(room)
                    if room in self.joined:
                        self._apply_join(room, ack)
                else:
                    self.form_error = f"Could not join {room}: {ack.get('detail') or ack.get('error')}"
                    if room in self.joined and len(self.joined) > 1:
                        self.joined.remove(room)
                        if self.room == room:
                            self.room = self.joined[0]
                self._refresh_view()
        for room in sorted(in_rooms - set(joined)):
            await link.call("leave", {"room": room})
            in_rooms.discard(room)
            if conn.typing_room == room:
                conn.typing_room = ""
        for room, before in older:
            request = {"room": room, "limit": HISTORY_PAGE}
            if before:
                request["before"] = before
            ack = await link.call("history", request) if room in in_rooms else {"ok": False}
            async with self:
                if ack.get("ok") and room in self.joined:
                    self._logs[room], _ = chatlog.merge(self._logs.get(room, []), ack.get("messages") or [])
                    self._more[room] = bool(ack.get("more"))
                if room in self._older_wanted:
                    self._older_wanted.remove(room)
                self.loading_older = bool(self._older_wanted)
                self._refresh_view()
        if await self._flush_outbox(link, in_rooms):
            conn.retry_at = time.monotonic() + 1.0

    async def _flush_outbox(self, link: BackendLink, in_rooms: set[str]) -> bool:
        """Send every queued message of a joined room, in order, each until acked.

        Returns whether a message is left to retry (the backend said not now).
        """
        while True:
            async with self:
                item = next((dict(i) for i in self._outbox if i["room"] in in_rooms), None)
            if item is None:
                return False
            ack = await link.call("message", item)
            async with self:
                if ack.get("ok") or ack.get("error") in FINAL_ERRORS:
                    self._outbox = [i for i in self._outbox if i["client_id"] != item["client_id"]]
                if ack.get("ok") and isinstance(ack.get("id"), str) and isinstance(ack.get("seq"), int):
                    # Show it from the ack: the broadcast may be lost; dedupe by id.
                    self._apply_message(
                        {
                            **item,
                            "id": ack["id"],
                            "seq": ack["seq"],
                            "ts": ack.get("ts"),
                            "user": {"name": self.name},
                        }
                    )
                elif not ack.get("ok"):
                    self.send_error = f"Not sent: {ack.get('detail') or ack.get('error')}"
                self._refresh_view()
            if not ack.get("ok") and ack.get("error") not in FINAL_ERRORS:
                # Rate limited or unavailable: it stays queued for a retry.
                return True

    async def _fetch_gap(self, link: BackendLink, room: str, before: str, count: int) -> None:
        ack = await link.call("history", {"room": room, "before": before, "limit": min(count, 200)})
        if ack.get("ok"):
            async with self:
                if room in self.joined:
                    self._logs[room], _ = chatlog.merge(self._logs.get(room, []), ack.get("messages") or [])
                    self._refresh_view()

    async def _typing_tick(self, link: BackendLink, conn: _Connection, now: float) -> None:
        """Tell the room when this tab starts and stops typing."""
        typing_now = conn.keyed_at and now - conn.keyed_at < TYPING_IDLE and conn.keyed_room in conn.in_rooms
        wanted = conn.keyed_room if typing_now else ""
        if conn.typing_room and conn.typing_room != wanted:
            await link.tell("typing", {"room": conn.typing_room, "typing": False})
            conn.typing_room = ""
        if wanted and not conn.typing_room:
            await link.tell("typing", {"room": wanted, "typing": True})
            conn.typing_room = wanted
