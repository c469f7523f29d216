// The browser half of the fleetchat UI: this tab's connection to the chat fleet.
//
// The page (frontend/, Python with Reflex) declares what is shown; this module
// holds the tab's Socket.IO connection straight to the chat backends, the
// tab's chat state, and the derived view the page renders. Reflex's own
// server therefore does no work per message: it serves the page, and every
// message goes backend -> browser, as in the seed article's React client.
//
// The connection is level-triggered: whenever it is up, `reconcile` brings it
// in line with the state (rooms joined with `since`, outbox sent once per
// client_id, older pages fetched), so a drop at any point loses nothing. The
// tab's state lives in sessionStorage: a reload is the same user, same rooms,
// same unsent messages, and resumes where it was.
//
// A message can change after it is sent (edited, deleted, reacted to): the
// backend sends `update` events with its new state, numbered per room by
// `rev`; the tab keeps the last rev it applied and resumes with it, so a
// change made while it was away arrives in the join ack's `updates`.

import { useEffect, useSyncExternalStore } from "react";
import { io } from "socket.io-client";
import { toast } from "sonner";
import {
  applyState,
  backoff,
  byName,
  cleanName,
  clock,
  indexOf,
  isMessage,
  isPrintable,
  isUpdate,
  mentions,
  merge,
  randomKey,
  reactionList,
  sleep,
  typingText,
} from "./chatlog.js";

const DEFAULT_ROOM = "general";
const MAX_NAME = 32;
const MAX_ROOM = 64;
const HISTORY_PAGE = 50;
// Lines on screen per room: the newest ones, more as the person asks for older
// ones. A tab keeps up to LOG_CAP messages, but a page of 1,000 lines made each
// new message cost twice as much in the browser (layout grows with the lines
// shown), so what a message costs stays bounded by this window.
const WINDOW = 150;
const TYPING_IDLE_MS = 3000;
// Read marks are sent at most this often (the newest one wins).
const READ_EVERY_MS = 1000;
const TYPING_SHOWN_MS = 6000;
// The room directory (other rooms and their member counts) is a convenience:
// polled this often, and only while the tab is in view (2,000 tabs at 5 s were
// 400 requests/s on the backend; bench/README.md, scenario e).
const DIRECTORY_EVERY_MS = 30000;
const OFFLINE_AFTER = 3;
const CALL_TIMEOUT_MS = 10000;
const CONNECT_TIMEOUT_MS = 5000;
const RETRY_AFTER_MS = 1000;
// Errors after which resending the same message cannot succeed.
const FINAL_ERRORS = new Set(["bad_request", "too_large", "unauthorized", "forbidden"]);
const STORE_KEY = "fleetchat.tab";
const SEARCH_MAX = 200; // characters of a query (backend/models.py)
const SEARCH_PAGE = 20;
// What the hover bar offers as one-click reactions.
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "👀", "✅"];
const QUOTE_CHARS = 90;
// The signed-in account, shared by every tab of the browser and kept across restarts.
const AUTH_KEY = "fleetchat.auth";
// Whether this browser sends read receipts in DMs ("off" when switched off).
const RECEIPTS_KEY = "fleetchat.receipts";
const LOGS_KEY = "fleetchat.logs";

class LinkDown extends Error {}

/** One tab's chat: its state, its connection, and the view the page renders. */
class ChatEngine {
  constructor() {
    this.listeners = new Set();
    this.urls = [];
    this.started = false;
    // What survives a reload (sessionStorage); logs are saved apart, less often.
    this.s = {
      // Who this tab chats as: an account id, or "guest:<name>"; the name shown.
      who: "",
      name: "",
      tabKey: "",
      joined: [],
      room: "",
      outbox: [],
      unread: {},
      epochs: {},
      more: {},
      revs: {}, // room -> the last update rev applied
      reads: {}, // room -> how far this user has read (the server's mark, from any device)
    };
    this.divider = {}; // room -> the read mark when the room was opened: "new messages" below it
    this.meta = {}; // room -> {private, dm, owner, peer}: rooms closed to their members
    this.forget = new Set(); // private rooms being left for good (leave with forget)
    this.inviteStatus = "";
    this.peerRead = {}; // DM room -> how far the other person has read (their read receipt)
    this.receipts = readReceiptsSetting();
    this.myRoomsAt = 0;
    this.readSent = {}; // room -> the last read mark sent on this connection
    this.logs = {};
    this.you = null; // the user object the backend knows this tab as (the join ack's `you`)
    this.moderator = false;
    this.editing = ""; // id of the message being edited in the current room
    this.replyTo = ""; // id of the message the next one answers
    this.members = {};
    this.typing = {};
    this.directoryRaw = [];
    this.olderWanted = new Set();
    this.status = "offline";
    this.backend = "";
    this.linkError = "";
    this.formError = "";
    this.sendError = "";
    this.sidebarOpen = false;
    this.auth = null; // {token, user} of the signed-in account
    this.authError = "";
    this.authBusy = false;
    this.showSignup = false;
    this.lineCache = new WeakMap();
    this.flagCache = new WeakMap();
    this.window = {}; // room -> lines shown (WINDOW unless the person asked for older)
    this.search_ = { query: "", results: [], busy: false, error: "", found: "" }; // the search panel; found: the message jumped to
    this.view = this.computeView();
    this.dirty = false;
    this.wake = null;
    this.socket = null;
    this.conn = null;
    this.load();
  }

  // ----- persistence -----

  load() {
    if (typeof window === "undefined") return;
    this.auth = readAuth();
    try {
      const saved = JSON.parse(window.sessionStorage.getItem(STORE_KEY) ?? "null");
      if (saved && typeof saved === "object") this.s = { ...this.s, ...saved };
      const logs = JSON.parse(window.sessionStorage.getItem(LOGS_KEY) ?? "null");
      if (logs && typeof logs === "object") {
        for (const [room, log] of Object.entries(logs)) {
          if (Array.isArray(log) && this.s.joined.includes(room)) this.logs[room] = merge([], log)[0];
        }
      }
    } catch {
      // A tab with unreadable storage starts afresh.
    }
    if (this.auth) this.become(`${this.auth.user.id}`, this.auth.user.name);
    else if (this.s.who && !this.s.who.startsWith("guest:")) this.become("", "");
    this.view = this.computeView();
  }

  /** Chat as `who` from now on; another identity than before starts from a clean slate. */
  become(who, name) {
    if (who !== this.s.who) {
      this.s = { ...this.s, who, name, joined: [], outbox: [], unread: {}, epochs: {}, more: {}, revs: {}, reads: {} };
      this.divider = {};
      this.meta = {};
      this.myRoomsAt = 0;
      this.you = null;
      this.moderator = false;
      this.editing = "";
      this.replyTo = "";
      this.logs = {};
      this.members = {};
      this.typing = {};
      this.lineCache = new WeakMap();
      this.restart();
    }
    this.s.name = name;
    if (!who) return;
    this.s.tabKey ||= randomKey(6);
    if (this.s.joined.length === 0) {
      this.s.joined = [DEFAULT_ROOM];
      this.s.room = DEFAULT_ROOM;
    }
  }

  save() {
    try {
      window.sessionStorage.setItem(STORE_KEY, JSON.stringify(this.s));
    } catch {
      // Storage full or blocked: the tab still works, it only forgets on reload.
    }
  }

  saveLogs() {
    try {
      window.sessionStorage.setItem(LOGS_KEY, JSON.stringify(this.logs));
    } catch {
      // As above.
    }
  }

  // ----- the view -----

  subscribe = (listener) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  /** Recompute the view once per tick, however many events changed the state. */
  changed() {
    if (this.dirty) return;
    this.dirty = true;
    queueMicrotask(() => {
      this.dirty = false;
      this.view = this.computeView();
      for (const listener of this.listeners) listener();
    });
  }

  /** Who this tab is, as the backend names users in messages and reactions. */
  myId() {
    return this.you?.id ?? (this.auth ? this.auth.user.id : `anon:${this.s.name.toLowerCase()}`);
  }

  /** How a room is named on screen: a DM by the other person. */
  label(room) {
    const peer = this.meta[room]?.peer;
    return this.meta[room]?.dm ? String(peer?.name ?? peer?.username ?? "direct message") : room;
  }

  find(room, id) {
    const log = this.logs[room] ?? [];
    const at = id ? indexOf(log, id) : -1;
    return at < 0 ? null : log[at];
  }

  quote(room, id) {
    const target = this.find(room, id);
    if (target === null) return { user: "", text: "an earlier message" };
    const text = target.deleted ? "message deleted" : target.text.replace(/\s+/g, " ");
    return {
      user: String(target.user?.name ?? "?"),
      text: text.length > QUOTE_CHARS ? `${text.slice(0, QUOTE_CHARS)}…` : text,
    };
  }

  line(message) {
    let line = this.lineCache.get(message);
    if (line === undefined) {
      const clientId = String(message.client_id ?? "");
      const deleted = message.deleted === true;
      const mine = message.user?.id === this.myId();
      const reply = message.reply_to ? this.quote(message.room, message.reply_to) : { user: "", text: "" };
      line = {
        key: message.id,
        id: message.id,
        user: String(message.user?.name ?? "?"),
        text: deleted ? "message deleted" : message.text,
        time: clock(message.ts),
        own: !!this.s.tabKey && clientId.startsWith(this.s.tabKey),
        mention: !deleted && mentions(message.text, this.s.name),
        pending: false,
        guest: message.user?.guest === true,
        edited: !deleted && Number.isInteger(message.edited_ts),
        deleted,
        reactions: deleted ? [] : reactionList(message, this.myId()),
        has_reply: !!message.reply_to,
        reply_user: reply.user,
        reply_text: reply.text,
        can_edit: mine && !deleted,
        can_delete: (mine || this.moderator) && !deleted,
        editing: false,
        first_unread: false,
        seen: false,
      };
      this.lineCache.set(message, line);
    }
    const divider = this.divider[message.room];
    const firstUnread = divider !== undefined && message.seq === divider + 1 && !line.own;
    const seen = message.id === this.seenId;
    return this.decorate(line, line.id === this.editing && !line.deleted, firstUnread, seen);
  }

  /** A line with what depends on the view, not the message (being edited, the first unread):
   * the same object while that stays the same, so the page re-renders nothing. */
  decorate(line, editing, firstUnread, seen) {
    if (!editing && !firstUnread && !seen) return line;
    const key = `${editing}|${firstUnread}|${seen}`;
    const hit = this.flagCache.get(line);
    if (hit?.key === key) return hit.line;
    const decorated = { ...line, editing, first_unread: firstUnread, seen };
    this.flagCache.set(line, { key, line: decorated });
    return decorated;
  }

  computeView() {
    const room = this.s.room;
    const log = this.logs[room] ?? [];
    const shown = this.window[room] ?? WINDOW;
    const visible = log.length > shown ? log.slice(log.length - shown) : log;
    const sent = new Set(visible.map((m) => m.client_id));
    // In a DM, "Seen" goes under the newest of my messages the other person has read.
    this.seenId = "";
    if (this.meta[room]?.dm && this.peerRead[room]) {
      const me = this.myId();
      for (let i = visible.length - 1; i >= 0; i--) {
        const m = visible[i];
        if (m.seq <= this.peerRead[room] && m.user?.id === me) {
          this.seenId = m.id;
          break;
        }
      }
    }
    const lines = visible.map((m) => this.line(m));
    for (const item of this.s.outbox) {
      if (item.room === room && !item.kind && !sent.has(item.client_id)) {
        let line = this.lineCache.get(item);
        if (line === undefined) {
          const reply = item.reply_to ? this.quote(room, item.reply_to) : { user: "", text: "" };
          line = {
            key: item.client_id,
            id: "",
            user: this.s.name,
            text: item.text,
            time: "",
            own: true,
            mention: false,
            pending: true,
            guest: !this.auth,
            edited: false,
            deleted: false,
            reactions: [],
            has_reply: !!item.reply_to,
            reply_user: reply.user,
            reply_text: reply.text,
            can_edit: false,
            can_delete: false,
            editing: false,
            first_unread: false,
            seen: false,
          };
          this.lineCache.set(item, line);
        }
        lines.push(line);
      }
    }
    const seen = new Map();
    for (const u of this.members[room] ?? []) {
      const name = String(u?.name ?? "?");
      seen.set(`${u?.guest === true}:${name}`, { name, guest: u?.guest === true });
    }
    const members = [...seen.values()].sort((a, b) => byName(a.name, b.name));
    const now = Date.now();
    const typing = Object.entries(this.typing[room] ?? {})
      .filter(([who, until]) => until > now && who !== this.s.name)
      .map(([who]) => who)
      .sort();
    const counts = {};
    for (const entry of this.directoryRaw) {
      if (entry && typeof entry.name === "string") counts[entry.name] = Number.isInteger(entry.members) ? entry.members : 0;
    }
    for (const joined of this.s.joined) {
      // The backend's directory may lag behind a join this tab just made.
      counts[joined] = Math.max(counts[joined] ?? 0, (this.members[joined] ?? []).length);
    }
    const directory = Object.entries(counts)
      .map(([name, members]) => ({
        name,
        label: this.label(name),
        members,
        unread: this.s.unread[name] ?? 0,
        joined: this.s.joined.includes(name),
        current: name === room,
        private: !!this.meta[name]?.private,
        dm: !!this.meta[name]?.dm,
      }))
      .sort((a, b) => Number(b.joined) - Number(a.joined) || byName(a.label, b.label));
    const meta = this.meta[room] ?? {};
    const replying = this.replyTo ? this.quote(room, this.replyTo) : null;
    const previous = this.view;
    const same = (key, value) => (previous && JSON.stringify(previous[key]) === JSON.stringify(value) ? previous[key] : value);
    return {
      named: !!this.s.who,
      name: this.s.name,
      guest: !this.auth,
      auth_error: this.authError,
      auth_busy: this.authBusy,
      show_signup: this.showSignup,
      room,
      can_leave: this.s.joined.length > 1,
      status: this.status,
      backend: this.backend,
      link_error: this.linkError,
      form_error: this.formError,
      send_error: this.sendError,
      lines: previous && lines.length === previous.lines.length && lines.every((l, i) => l === previous.lines[i]) ? previous.lines : lines,
      members: same("members", members),
      typing_text: typingText(typing),
      directory: same("directory", directory.filter((r) => !r.dm)),
      dms: same("dms", directory.filter((r) => r.dm)),
      has_older: !!this.s.more[room] || log.length > shown,
      loading_older: this.olderWanted.size > 0,
      sidebar_open: this.sidebarOpen,
      replying: replying ? `${replying.user ? `${replying.user}: ` : ""}${replying.text}` : "",
      room_title: meta.dm ? `@ ${this.label(room)}` : `${meta.private ? "🔒" : "#"} ${room}`,
      room_private: !!meta.private && !meta.dm,
      can_invite: !!meta.private && !meta.dm && (meta.owner === this.myId() || this.moderator),
      invite_status: this.inviteStatus,
      receipts: this.receipts,
      editing: this.editing,
      search_results: this.search_.results,
      searching: this.search_.busy,
      search_error: this.search_.error,
      search_open: !!this.search_.query,
    };
  }

  // ----- what the person does -----

  pickName(form) {
    const name = cleanName(form?.name);
    if (!name || [...name].length > MAX_NAME || !isPrintable(name)) {
      this.formError = `Pick a name of 1 to ${MAX_NAME} printable characters.`;
      this.changed();
      return;
    }
    this.formError = "";
    this.authError = "";
    this.become(`guest:${name.toLowerCase()}`, name);
    this.save();
    this.changed();
    this.poke();
  }

  toggleSignup() {
    this.showSignup = !this.showSignup;
    this.authError = "";
    this.changed();
  }

  /** Sign in (`create` false) or create an account, then chat as it in every tab of this browser. */
  async account(form, create) {
    if (this.authBusy) return;
    const body = { username: String(form?.username ?? "").trim(), password: String(form?.password ?? "") };
    if (create && form?.display_name) body.display_name = String(form.display_name).trim();
    this.authBusy = true;
    this.authError = "";
    this.changed();
    try {
      const answer = await this.post(create ? "/api/auth/signup" : "/api/auth/login", body);
      if (answer.ok && answer.body?.token) {
        writeAuth({ token: answer.body.token, user: answer.body.user });
        this.adoptAuth();
      } else {
        this.authError = answer.body?.detail ?? `could not ${create ? "create the account" : "sign in"}`;
      }
    } finally {
      this.authBusy = false;
      this.changed();
    }
  }

  /** The account form: it signs in, or creates the account when switched to that. */
  submitAccount(form) {
    return this.account(form, this.showSignup);
  }

  /** Sign out: the server ends the session (every tab and device with it), and the tab forgets who it was. */
  async signOut() {
    const token = this.auth?.token;
    writeAuth(null);
    this.auth = null;
    this.become("", "");
    this.save();
    this.changed();
    if (token) await this.post("/api/auth/logout", null, token);
  }

  /** Another tab of this browser signed in or out: follow it. */
  adoptAuth() {
    this.auth = readAuth();
    if (this.auth) this.become(`${this.auth.user.id}`, this.auth.user.name);
    else if (!this.s.who.startsWith("guest:")) this.become("", "");
    this.save();
    this.changed();
    this.poke();
  }

  /** POST JSON to the chat backend; {ok, status, body}, never throws. */
  async post(path, body, token = null) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    for (const url of this.urls.length ? this.urls : [defaultBackendUrl()]) {
      try {
        const response = await fetch(`${url}${path}`, {
          method: "POST",
          headers,
          body: body === null ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(15000),
        });
        const text = await response.text();
        return { ok: response.ok, status: response.status, body: text ? JSON.parse(text) : null };
      } catch {
        // That backend is unreachable: try the next.
      }
    }
    return { ok: false, status: 0, body: { detail: "the chat server cannot be reached; try again" } };
  }

  openRoom(value) {
    this.sidebarOpen = false;
    const room = cleanName(value);
    if (!room || [...room].length > MAX_ROOM || !isPrintable(room)) {
      this.formError = `Room names have 1 to ${MAX_ROOM} printable characters.`;
      this.changed();
      return;
    }
    this.formError = "";
    if (!this.s.joined.includes(room)) {
      this.s.joined = [...this.s.joined, room];
      if (this.conn) this.conn.directoryAt = 0; // a new room: refresh the directory now
    }
    if (this.s.room !== room) {
      this.editing = "";
      this.replyTo = "";
      // "New messages" below what was read before this visit (none when all was read)
      const log = this.logs[room] ?? [];
      const read = this.s.reads[room];
      const last = log.length ? log[log.length - 1].seq : 0;
      if (read !== undefined && read < last) this.divider[room] = read;
      else delete this.divider[room];
    }
    this.s.room = room;
    delete this.s.unread[room];
    this.save();
    this.changed();
    this.poke();
  }

  leaveRoom(room) {
    if (!this.s.joined.includes(room) || this.s.joined.length === 1) return;
    if (this.meta[room]?.private && !this.meta[room]?.dm) this.forget.add(room);
    this.dropRoom(room);
  }

  /** Forget a room in this tab (left, or removed by its owner). */
  dropRoom(room) {
    if (!this.s.joined.includes(room)) return;
    this.s.joined = this.s.joined.filter((r) => r !== room);
    for (const perRoom of [this.logs, this.s.epochs, this.s.more, this.s.revs, this.members, this.typing, this.s.unread]) {
      delete perRoom[room];
    }
    this.s.outbox = this.s.outbox.filter((item) => item.room !== room);
    if (this.s.room === room) {
      this.s.room = this.s.joined[0];
      delete this.s.unread[this.s.room];
    }
    this.save();
    this.changed();
    this.poke();
  }

  send(form) {
    const text = String(form?.text ?? "");
    if (!text.trim() || !this.s.room) return;
    this.sendError = "";
    const item = { room: this.s.room, text, client_id: this.clientId() };
    if (this.replyTo) item.reply_to = this.replyTo;
    this.replyTo = "";
    this.queue(item);
  }

  clientId() {
    return `${this.s.tabKey}-${randomKey(16)}`;
  }

  /** Queue something to send: a message, or a change to one (sent in order, each until acked). */
  queue(item) {
    this.s.outbox = [...this.s.outbox, item];
    this.save();
    this.changed();
    this.poke();
  }

  startReply(id) {
    if (!this.find(this.s.room, id)) return;
    this.replyTo = id;
    this.editing = "";
    this.changed();
    if (typeof document !== "undefined") document.getElementById("message-input")?.focus();
  }

  cancelReply() {
    this.replyTo = "";
    this.changed();
  }

  startEdit(id) {
    const message = this.find(this.s.room, id);
    if (!message || message.deleted || message.user?.id !== this.myId()) return;
    this.editing = id;
    this.replyTo = "";
    this.changed();
  }

  cancelEdit() {
    this.editing = "";
    this.changed();
  }

  saveEdit(form) {
    const id = this.editing;
    const text = String(form?.text ?? "");
    this.editing = "";
    const message = this.find(this.s.room, id);
    if (!message || !text.trim() || text === message.text) {
      this.changed();
      return;
    }
    this.queue({ kind: "edit", room: this.s.room, id, text, client_id: this.clientId() });
  }

  /** Delete a message (asks first: a deleted message cannot come back). */
  remove(id) {
    if (!this.find(this.s.room, id)) return;
    if (typeof window !== "undefined" && !window.confirm("Delete this message for everyone?")) return;
    if (this.editing === id) this.editing = "";
    this.queue({ kind: "delete", room: this.s.room, id, client_id: this.clientId() });
  }

  /** Add this reaction, or take it back when it is already mine. */
  react(id, emoji) {
    const message = this.find(this.s.room, id);
    if (!message || message.deleted) return;
    const on = !(message.reactions?.[emoji] ?? []).includes(this.myId());
    this.queue({ kind: "react", room: this.s.room, id, emoji, on, client_id: this.clientId() });
  }

  keyed() {
    if (!this.conn) return;
    this.conn.keyedRoom = this.s.room;
    this.conn.keyedAt = Date.now();
    if (this.conn.typingRoom !== this.s.room) this.poke();
  }

  loadOlder() {
    const room = this.s.room;
    const shown = this.window[room] ?? WINDOW;
    if ((this.logs[room] ?? []).length > shown) {
      // Older lines this tab holds already: show them, no round trip.
      this.window[room] = shown + HISTORY_PAGE;
      this.changed();
      return;
    }
    if (room) this.window[room] = shown + HISTORY_PAGE;
    if (this.s.room && !this.olderWanted.has(this.s.room)) {
      this.olderWanted.add(this.s.room);
      this.changed();
      this.poke();
    }
  }

  toggleSidebar() {
    this.sidebarOpen = !this.sidebarOpen;
    this.changed();
  }

  // ----- search -----

  /** Search every room this user may read (the search event); results replace the panel's. */
  async search(form) {
    const query = String(form?.q ?? "").trim();
    this.search_ = { ...this.search_, query, results: [], error: "", busy: !!query };
    this.changed();
    if (!query) return;
    if (!this.conn) {
      this.search_ = { ...this.search_, busy: false, error: "Not connected: search again in a moment." };
      this.changed();
      return;
    }
    let ack;
    try {
      ack = await this.call(this.conn, "search", { q: query.slice(0, SEARCH_MAX), limit: SEARCH_PAGE });
    } catch (error) {
      ack = { ok: false, detail: String(error?.message ?? error) };
    }
    if (this.search_.query !== query) return; // a newer search replaced this one
    const hits = ack.ok && Array.isArray(ack.messages) ? ack.messages : [];
    this.search_ = {
      ...this.search_,
      busy: false,
      error: ack.ok ? (hits.length ? "" : "No messages match.") : `Search failed: ${ack.detail ?? ack.error}`,
      results: hits.map((hit) => ({
        key: `${hit.room}/${hit.id}`,
        room: String(hit.room),
        id: String(hit.id),
        user: String(hit.user?.name ?? "?"),
        time: clock(hit.ts),
        // text nodes, the matched words marked: never markup from a message
        segments: (Array.isArray(hit.highlight) ? hit.highlight : [{ text: String(hit.text ?? ""), match: false }]).map(
          (seg) => ({ text: String(seg?.text ?? ""), match: seg?.match === true }),
        ),
      })),
    };
    this.changed();
  }

  closeSearch() {
    this.search_ = { query: "", results: [], busy: false, error: "", found: "" };
    this.changed();
  }

  /** Open a result's room with the history around it loaded, and show it there, marked. */
  async openResult(room, id) {
    this.openRoom(room);
    this.search_ = { ...this.search_, query: "", found: id };
    this.changed();
    const seq = Number(id);
    const conn = await this.joinedConn(room);
    if (conn) {
      // Older pages until the message is in the log (it stays one unbroken run of history).
      for (let page = 0; page < 4 && this.find(room, id) === null; page += 1) {
        const log = this.logs[room] ?? [];
        if (log.length && log[0].seq <= seq) break;
        const request = { room, limit: 500 };
        if (log.length) request.before = log[0].id;
        const ack = await this.call(conn, "history", request).catch(() => ({ ok: false }));
        if (!ack.ok || !this.s.joined.includes(room)) break;
        this.logs[room] = merge(this.logs[room] ?? [], ack.messages)[0];
        this.s.more[room] = !!ack.more;
        if (!ack.more) break;
      }
      if (this.find(room, id) === null) {
        // Too far back for that: the page around it (before = its id + 25).
        const before = String(seq + 25).padStart(id.length, "0");
        const ack = await this.call(conn, "history", { room, before, limit: 50 }).catch(() => ({ ok: false }));
        if (ack.ok) this.logs[room] = merge(this.logs[room] ?? [], ack.messages)[0];
      }
    }
    const log = this.logs[room] ?? [];
    const at = indexOf(log, id);
    if (at >= 0) this.window[room] = Math.max(this.window[room] ?? WINDOW, log.length - at + 10);
    this.save();
    this.changed();
    this.reveal(id);
  }

  /** The connection once it has joined `room` (openRoom asked it to), or null. */
  async joinedConn(room) {
    for (let tries = 0; tries < 100; tries += 1) {
      if (this.conn?.inRooms.has(room)) return this.conn;
      await sleep(50);
    }
    return null;
  }

  /** Scroll to the message and mark it (a class on its bubble) once the page shows it. */
  reveal(id, tries = 0) {
    if (typeof document === "undefined" || this.search_.found !== id) return;
    const bubble = document.querySelector(`#messages [data-id="${CSS.escape(id)}"]`);
    if (bubble === null) {
      if (tries < 40) setTimeout(() => this.reveal(id, tries + 1), 50);
      return;
    }
    for (const old of document.querySelectorAll("#messages .msg-found")) old.classList.remove("msg-found");
    bubble.classList.add("msg-found");
    bubble.scrollIntoView({ block: "center" });
  }

  // ----- the connection -----

  start(urls) {
    this.urls = urls.length ? urls : [defaultBackendUrl()];
    if (this.started) return;
    this.started = true;
    window.addEventListener("storage", (event) => {
      if (event.key === AUTH_KEY) this.adoptAuth();
    });
    window.addEventListener("pagehide", () => {
      this.save();
      this.saveLogs();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") {
        this.saveLogs();
      } else if (this.conn) {
        this.conn.directoryAt = 0; // back in view: refresh the directory now
        this.poke();
      }
    });
    this.run();
  }

  poke() {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /** Sleep until poked or `ms` pass. */
  idle(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** A new name needs a new connection (the backend knows a socket by its name). */
  restart() {
    this.socket?.disconnect();
  }

  async run() {
    let start = 0;
    let failures = 0;
    for (;;) {
      if (!this.s.who) {
        await this.idle(60000);
        continue;
      }
      const socket = await this.connect(start);
      if (socket === null) {
        failures += 1;
        this.status = failures >= OFFLINE_AFTER ? "offline" : "reconnecting";
        this.changed();
        await sleep(backoff(failures));
        continue;
      }
      failures = 0;
      start = this.urls.indexOf(this.backend);
      this.status = "connected";
      this.linkError = "";
      this.changed();
      try {
        await this.session(socket);
      } catch (error) {
        if (!(error instanceof LinkDown)) console.error("fleetchat:", error);
        this.linkError = String(error?.message ?? error).slice(0, 300);
      } finally {
        socket.disconnect();
        this.socket = null;
        this.conn = null;
      }
      this.status = "reconnecting";
      this.changed();
      // The next round tries the next backend first: this one just failed.
      if (this.urls.length > 1) start = (start + 1) % this.urls.length;
    }
  }

  /** Whether the backend refused who this tab is (not a network failure): then the tab
   * stops being that user and asks again, saying why. */
  refused(data) {
    const code = data?.error;
    if (code !== "unauthorized" && code !== "name_taken") return false;
    if (this.auth) {
      writeAuth(null);
      this.auth = null;
      this.authError = "Your session has ended: sign in again.";
    } else if (code === "name_taken") {
      this.formError = String(data.detail ?? "That name belongs to an account.");
    } else {
      this.authError = String(data.detail ?? "Sign in first.");
    }
    this.become("", "");
    this.save();
    this.changed();
    return true;
  }

  /** Connect to the first backend that answers, starting at `start`; null when none does. */
  async connect(start) {
    const reasons = [];
    for (let attempt = 0; attempt < this.urls.length; attempt++) {
      const url = this.urls[(start + attempt) % this.urls.length];
      const socket = io(url, {
        transports: ["websocket"],
        reconnection: false,
        timeout: CONNECT_TIMEOUT_MS,
        auth: this.auth ? { token: this.auth.token } : { name: this.s.name },
      });
      const error = await new Promise((resolve) => {
        socket.once("connect", () => resolve(null));
        socket.once("connect_error", (err) => resolve(err));
      });
      if (error === null) {
        this.socket = socket;
        this.backend = url;
        return socket;
      }
      socket.disconnect();
      if (this.refused(error?.data)) return null;
      reasons.push(`${url}: ${error?.message ?? error}`);
    }
    this.linkError = reasons.join("; ").slice(0, 300);
    return null;
  }

  async session(socket) {
    const conn = {
      socket,
      inRooms: new Set(),
      typingRoom: "",
      keyedRoom: "",
      keyedAt: 0,
      directoryAt: 0,
      retryAt: 0,
      readSent: {},
      readAt: 0,
      down: null,
    };
    conn.down = new Promise((_, reject) => {
      socket.once("disconnect", (reason) => {
        reject(new LinkDown(`disconnected: ${reason}`));
        this.poke();
      });
    });
    conn.down.catch(() => {});
    this.conn = conn;
    socket.on("message", (data) => this.onMessage(conn, data));
    socket.on("update", (data) => this.onUpdate(data));
    socket.on("epoch", (data) => this.onEpoch(data));
    socket.on("read", (data) => this.onRead(data));
    socket.on("membership", (data) => this.onMembership(data));
    socket.on("receipt", (data) => this.onReceipt(data));
    socket.on("presence", (data) => this.onPresence(data));
    socket.on("typing", (data) => this.onTyping(data));
    socket.on("notification", (data) => this.onNotification(data));
    while (socket.connected) {
      await this.reconcile(conn);
      await this.typingTick(conn);
      await this.readTick(conn);
      if (Date.now() - conn.directoryAt > DIRECTORY_EVERY_MS && document.visibilityState !== "hidden") {
        conn.directoryAt = Date.now();
        this.refreshDirectory();
        this.loadMyRooms();
      }
      this.expireTyping();
      const wait = conn.retryAt ? Math.max(0, conn.retryAt - Date.now()) : 1000;
      await Promise.race([this.idle(Math.min(wait, 1000)), conn.down]);
      if (conn.retryAt && Date.now() >= conn.retryAt) conn.retryAt = 0;
    }
    throw new LinkDown("disconnected");
  }

  /** Emit an event and wait for its ack; LinkDown when the connection fails first. */
  async call(conn, event, data) {
    if (!conn.socket.connected) throw new LinkDown("not connected");
    const ack = await Promise.race([conn.socket.timeout(CALL_TIMEOUT_MS).emitWithAck(event, data), conn.down]).catch(
      (error) => {
        throw error instanceof LinkDown ? error : new LinkDown(`${event}: ${error?.message ?? error}`);
      },
    );
    return ack && typeof ack === "object" ? ack : { ok: false, error: "bad_ack", detail: String(ack) };
  }

  /** Bring the connection in line with the state: rooms, older pages, outbox. */
  async reconcile(conn) {
    for (const room of [...this.s.joined]) {
      if (conn.inRooms.has(room)) continue;
      const request = { room };
      const log = this.logs[room];
      if (log?.length) {
        request.since = log[log.length - 1].id;
        request.rev = this.s.revs[room] ?? 0;
      }
      const ack = await this.call(conn, "join", request);
      if (ack.ok) {
        conn.inRooms.add(room);
        if (this.s.joined.includes(room)) this.applyJoin(room, ack);
      } else {
        this.formError = `Could not join ${room}: ${ack.detail ?? ack.error}`;
        if (this.s.joined.includes(room) && this.s.joined.length > 1) {
          this.s.joined = this.s.joined.filter((r) => r !== room);
          if (this.s.room === room) this.s.room = this.s.joined[0];
          this.save();
        }
      }
      this.changed();
    }
    for (const room of [...conn.inRooms].filter((r) => !this.s.joined.includes(r))) {
      await this.call(conn, "leave", this.forget.has(room) ? { room, forget: true } : { room });
      this.forget.delete(room);
      conn.inRooms.delete(room);
      if (conn.typingRoom === room) conn.typingRoom = "";
    }
    for (const room of [...this.olderWanted]) {
      const log = this.logs[room] ?? [];
      const request = { room, limit: HISTORY_PAGE };
      if (log.length) request.before = log[0].id;
      const ack = conn.inRooms.has(room) ? await this.call(conn, "history", request) : { ok: false };
      if (ack.ok && this.s.joined.includes(room)) {
        this.logs[room] = merge(this.logs[room] ?? [], ack.messages)[0];
        this.s.more[room] = !!ack.more;
        this.save();
      }
      this.olderWanted.delete(room);
      this.changed();
    }
    if (!conn.retryAt && (await this.flushOutbox(conn))) conn.retryAt = Date.now() + RETRY_AFTER_MS;
  }

  applyJoin(room, ack) {
    const epoch = String(ack.epoch ?? "");
    const history = Array.isArray(ack.history) ? ack.history : [];
    if (room in this.s.epochs && this.s.epochs[room] !== epoch) {
      // The room's stored history was lost: ids from before no longer apply.
      this.logs[room] = [];
    }
    if (ack.updates_truncated) {
      // Too much changed while away to patch: start again from what the server holds.
      this.logs[room] = [];
      this.s.more[room] = true;
    }
    this.s.epochs[room] = epoch;
    if (!(room in this.s.more)) this.s.more[room] = history.length >= HISTORY_PAGE;
    this.logs[room] = merge(this.logs[room] ?? [], history)[0];
    for (const update of Array.isArray(ack.updates) ? ack.updates : []) {
      if (isUpdate(update)) this.logs[room] = applyState(this.logs[room], update.message)[0];
    }
    if (Number.isInteger(ack.rev)) this.s.revs[room] = Math.max(this.s.revs[room] ?? 0, ack.rev);
    if (ack.private) this.meta[room] = { ...this.meta[room], private: true, dm: !!ack.dm, owner: ack.owner ?? null };
    if (Number.isInteger(ack.peer_read_seq)) this.peerRead[room] = Math.max(this.peerRead[room] ?? 0, ack.peer_read_seq);
    if (Number.isInteger(ack.read_seq)) {
      // The server's mark, whichever device moved it: unread counts agree everywhere.
      this.s.reads[room] = ack.read_seq;
      if (room !== this.s.room && Number.isInteger(ack.unread)) this.s.unread[room] = ack.unread;
      if (room === this.s.room && this.divider[room] === undefined && ack.unread > 0) this.divider[room] = ack.read_seq;
    }
    if (Array.isArray(ack.members)) this.members[room] = ack.members;
    if (ack.you && typeof ack.you.id === "string" && ack.you.id !== this.you?.id) {
      this.you = ack.you;
      this.lineCache = new WeakMap();
    }
    if (!!ack.moderator !== this.moderator) {
      this.moderator = !!ack.moderator;
      this.lineCache = new WeakMap();
    }
    this.save();
  }

  /** Send every queued message of a joined room, in order, each until acked.
   * Returns whether a message is left to retry (the backend said not now). */
  async flushOutbox(conn) {
    for (;;) {
      const item = this.s.outbox.find((i) => conn.inRooms.has(i.room));
      if (item === undefined) return false;
      const { kind, ...payload } = item;
      const ack = await this.call(conn, kind ?? "message", payload);
      const final = ack.ok || FINAL_ERRORS.has(ack.error) || (kind && ack.error === "not_found");
      if (final) {
        this.s.outbox = this.s.outbox.filter((i) => i.client_id !== item.client_id);
        this.save();
      }
      if (ack.ok && kind) {
        // The change's new state, from the ack: the update event may come later.
        this.applyUpdate({ room: item.room, rev: ack.rev, message: ack.message });
      } else if (ack.ok && typeof ack.id === "string" && Number.isInteger(ack.seq)) {
        // Show it from the ack: the broadcast may be lost; dedupe by id.
        const user = this.you ?? (this.auth ? { ...this.auth.user } : { name: this.s.name, guest: true });
        this.applyMessage({ ...payload, id: ack.id, seq: ack.seq, ts: ack.ts, user });
      } else if (!ack.ok) {
        this.sendError = `${kind ? "Not changed" : "Not sent"}: ${ack.detail ?? ack.error}`;
      }
      this.changed();
      // Rate limited or unavailable: it stays queued for a retry.
      if (!final) return true;
    }
  }

  /** Merge one message; returns how many messages were skipped just before it. */
  applyMessage(message) {
    const room = message.room;
    if (!this.s.joined.includes(room)) return 0;
    const log = this.logs[room] ?? [];
    const prior = log.length ? log[log.length - 1].seq : 0;
    const [merged, added] = merge(log, [message]);
    if (added.length === 0) return 0;
    this.logs[room] = merged;
    if (room !== this.s.room) {
      this.s.unread[room] = (this.s.unread[room] ?? 0) + 1;
      this.save();
    }
    if (this.typing[room]) delete this.typing[room][String(message.user?.name)];
    this.changed();
    return prior ? Math.max(0, message.seq - prior - 1) : 0;
  }

  onMessage(conn, data) {
    if (!isMessage(data)) return;
    const skipped = this.applyMessage(data);
    if (skipped) this.fetchGap(conn, data.room, data.id, skipped);
  }

  /** A message's new state: live from the room, or from the ack of this tab's own change. */
  applyUpdate(update) {
    if (!isUpdate(update) || !this.s.joined.includes(update.room)) return;
    const room = update.room;
    const [log, changed] = applyState(this.logs[room] ?? [], update.message);
    if (changed) {
      this.logs[room] = log;
      // Replies quote it: they show its new text (or that it was deleted) too.
      for (const message of log) if (message.reply_to === update.message.id) this.lineCache.delete(message);
      if (this.editing === update.message.id && update.message.deleted) this.editing = "";
      this.changed();
    }
  }

  /** The room's stored history was lost and began again: what the tab holds no longer
   * applies; the backend now sends the new history from its first message. */
  onEpoch(data) {
    const room = data?.room;
    if (!this.s.joined.includes(room) || typeof data.epoch !== "string" || this.s.epochs[room] === data.epoch) return;
    // What the archive kept (up to kept_seq) still applies; what came after was lost.
    const keptSeq = Number.isInteger(data.kept_seq) ? data.kept_seq : 0;
    const keptRev = Number.isInteger(data.kept_rev) ? data.kept_rev : 0;
    this.s.epochs[room] = data.epoch;
    this.logs[room] = (this.logs[room] ?? []).filter((m) => m.seq <= keptSeq);
    this.s.revs[room] = Math.min(this.s.revs[room] ?? 0, keptRev);
    this.s.more[room] = keptSeq > 0;
    this.editing = "";
    this.replyTo = "";
    this.save();
    this.changed();
  }

  onUpdate(data) {
    if (!isUpdate(data)) return;
    this.applyUpdate(data);
    // Live updates arrive in rev order without gaps, so the newest one is how far the tab is.
    if (this.s.joined.includes(data.room) && data.rev > (this.s.revs[data.room] ?? 0)) {
      this.s.revs[data.room] = data.rev;
      this.save();
    }
  }

  async fetchGap(conn, room, before, count) {
    try {
      const ack = await this.call(conn, "history", { room, before, limit: Math.min(count, 200) });
      if (ack.ok && this.s.joined.includes(room)) {
        this.logs[room] = merge(this.logs[room] ?? [], ack.messages)[0];
        this.changed();
      }
    } catch {
      // The rejoin after the reconnect resumes from the last id held.
    }
  }

  onPresence(data) {
    if (data && Array.isArray(data.members) && this.s.joined.includes(data.room)) {
      this.members[data.room] = data.members;
      this.changed();
    }
  }

  onTyping(data) {
    const room = data?.room;
    const who = String(data?.user?.name ?? "");
    if (!this.s.joined.includes(room) || !who) return;
    const typing = (this.typing[room] ??= {});
    if (data.typing) typing[who] = Date.now() + TYPING_SHOWN_MS;
    else delete typing[who];
    this.changed();
  }

  onNotification(data) {
    if (data?.kind !== "mention" || !isMessage(data.message)) return;
    const message = data.message;
    // From a private room it reaches every member there: it is for the ones it names.
    if (Array.isArray(data.mentions) && !mentions(message.text, this.s.name)) return;
    const who = String(message.user?.name ?? "someone");
    toast(`${who} mentioned you in #${message.room}: ${message.text.slice(0, 140)}`, { id: `mention-${message.id}` });
  }

  expireTyping() {
    const now = Date.now();
    let expired = false;
    for (const typing of Object.values(this.typing)) {
      for (const [who, until] of Object.entries(typing)) {
        if (until <= now) {
          delete typing[who];
          expired = true;
        }
      }
    }
    if (expired) this.changed();
  }

  /** Tell the server how far this user has read the room on screen (while the tab is in
   * view), at most once a second; its other tabs and devices clear their counts. */
  async readTick(conn) {
    const room = this.s.room;
    if (!conn.inRooms.has(room) || document.visibilityState === "hidden") return;
    const log = this.logs[room] ?? [];
    const last = log.length ? log[log.length - 1].seq : 0;
    if (last <= (this.s.reads[room] ?? 0) || last <= (conn.readSent[room] ?? 0)) return;
    if (Date.now() - (conn.readAt ?? 0) < READ_EVERY_MS) return;
    conn.readAt = Date.now();
    conn.readSent[room] = last;
    const ack = await this.call(conn, "read", { room, seq: last, receipt: this.receipts });
    if (ack.ok && Number.isInteger(ack.read_seq)) {
      this.s.reads[room] = Math.max(this.s.reads[room] ?? 0, ack.read_seq);
      this.save();
    }
  }

  /** The private rooms and DMs of this account, on every device: they join the tab's
   * rooms, with their unread counts from the server. */
  async loadMyRooms() {
    const token = this.auth?.token;
    if (!token) return;
    try {
      const response = await fetch(`${this.backend}/api/me/rooms`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(5000),
      });
      if (!response.ok) return;
      const body = await response.json();
      for (const entry of Array.isArray(body?.rooms) ? body.rooms : []) {
        if (!entry?.private || typeof entry.room !== "string") continue;
        this.meta[entry.room] = { ...this.meta[entry.room], private: true, dm: !!entry.dm, peer: entry.peer ?? null };
        if (!this.s.joined.includes(entry.room)) {
          this.s.joined = [...this.s.joined, entry.room];
          if (entry.unread > 0) this.s.unread[entry.room] = entry.unread;
        }
      }
      this.save();
      this.changed();
      this.poke();
    } catch {
      // The next poll tries again.
    }
  }

  /** The other person of a DM read up to here. */
  onReceipt(data) {
    const room = data?.room;
    if (!this.meta[room]?.dm || data.user === this.myId() || !Number.isInteger(data.seq)) return;
    if (data.seq <= (this.peerRead[room] ?? 0)) return;
    this.peerRead[room] = data.seq;
    this.changed();
  }

  /** Send read receipts in DMs, or stop (this browser remembers the choice). */
  toggleReceipts() {
    this.receipts = !this.receipts;
    try {
      window.localStorage.setItem(RECEIPTS_KEY, this.receipts ? "on" : "off");
    } catch {
      // Not kept: the choice lasts as long as this tab.
    }
    this.changed();
  }

  /** This account was added to a room (an invitation, a new DM) or removed from one. */
  onMembership(data) {
    const room = data?.room;
    if (typeof room !== "string") return;
    if (data.removed) {
      if (this.s.joined.includes(room)) toast(`You are no longer in ${this.label(room)}`);
      this.dropRoom(room);
      delete this.meta[room];
      this.changed();
      return;
    }
    this.meta[room] = { ...this.meta[room], private: !!data.private, dm: !!data.dm, peer: data.peer ?? this.meta[room]?.peer };
    if (!this.s.joined.includes(room)) {
      this.s.joined = [...this.s.joined, room];
      this.save();
    }
    this.changed();
    this.poke();
  }

  /** Create a room (private when asked); then it is the room on screen. */
  async createRoom(form) {
    const name = cleanName(form?.room).toLowerCase();
    if (!form?.private || !name) return this.openRoom(form?.room);
    const ack = this.conn ? await this.call(this.conn, "create", { room: name, private: true }).catch(() => null) : null;
    if (!ack?.ok) {
      this.formError = `Could not create ${name}: ${ack?.detail ?? "not connected"}`;
      this.changed();
      return;
    }
    this.meta[ack.room] = { private: true, dm: false, owner: this.myId() };
    this.openRoom(ack.room);
  }

  /** Open the direct messages with another account ("new message to…"). */
  async openDm(form) {
    const user = String(form?.user ?? "").trim();
    if (!user) return;
    const ack = this.conn ? await this.call(this.conn, "dm", { user }).catch(() => null) : null;
    if (!ack?.ok) {
      this.formError = `Could not message ${user}: ${ack?.detail ?? "not connected"}`;
      this.changed();
      return;
    }
    this.meta[ack.room] = { private: true, dm: true, peer: ack.peer };
    this.openRoom(ack.room);
  }

  /** Invite an account into the private room on screen. */
  async invite(form) {
    const user = String(form?.user ?? "").trim();
    const room = this.s.room;
    if (!user || !this.conn) return;
    const ack = await this.call(this.conn, "invite", { room, user }).catch(() => null);
    this.inviteStatus = ack?.ok ? `${user} can now read #${room}.` : `Not invited: ${ack?.detail ?? "not connected"}`;
    this.changed();
  }

  /** This user read a room on another tab or device. */
  onRead(data) {
    const room = data?.room;
    if (!this.s.joined.includes(room) || !Number.isInteger(data.seq)) return;
    if (data.seq <= (this.s.reads[room] ?? 0)) return;
    this.s.reads[room] = data.seq;
    const log = this.logs[room] ?? [];
    const last = log.length ? log[log.length - 1].seq : 0;
    if (room !== this.s.room) {
      const unread = Math.max(0, last - data.seq);
      if (unread) this.s.unread[room] = unread;
      else delete this.s.unread[room];
    }
    this.save();
    this.changed();
  }

  /** Tell the room when this tab starts and stops typing. */
  async typingTick(conn) {
    const typingNow = conn.keyedAt && Date.now() - conn.keyedAt < TYPING_IDLE_MS && conn.inRooms.has(conn.keyedRoom);
    const wanted = typingNow ? conn.keyedRoom : "";
    if (conn.typingRoom && conn.typingRoom !== wanted) {
      conn.socket.emit("typing", { room: conn.typingRoom, typing: false }, () => {});
      conn.typingRoom = "";
    }
    if (wanted && !conn.typingRoom) {
      conn.socket.emit("typing", { room: wanted, typing: true }, () => {});
      conn.typingRoom = wanted;
    }
  }

  async refreshDirectory() {
    try {
      const response = await fetch(`${this.backend}/api/rooms`, { signal: AbortSignal.timeout(5000) });
      if (!response.ok) return;
      const body = await response.json();
      if (Array.isArray(body?.rooms)) {
        this.directoryRaw = body.rooms;
        this.changed();
      }
    } catch {
      // The directory is a convenience; the next refresh tries again.
    }
  }
}

const readReceiptsSetting = () => {
  try {
    return typeof window === "undefined" || window.localStorage.getItem(RECEIPTS_KEY) !== "off";
  } catch {
    return true;
  }
};

/** The signed-in account of this browser ({token, user}), or null. */
const readAuth = () => {
  try {
    const auth = JSON.parse(window.localStorage.getItem(AUTH_KEY) ?? "null");
    return auth && typeof auth.token === "string" && auth.user && typeof auth.user.id === "string" ? auth : null;
  } catch {
    return null;
  }
};

const writeAuth = (auth) => {
  try {
    if (auth) window.localStorage.setItem(AUTH_KEY, JSON.stringify(auth));
    else window.localStorage.removeItem(AUTH_KEY);
  } catch {
    // Storage blocked: this tab stays signed in until it is closed.
  }
};

/** Where the chat backend is when the page was built without CHAT_BACKEND_URL. */
const defaultBackendUrl = () => `${window.location.protocol}//${window.location.hostname}:8000`;

/** The backend URLs as configured: absolute, or "/" for the page's own origin (a proxy in front). */
const resolveUrls = (urls) =>
  (urls ?? [])
    .map((url) => String(url).trim().replace(/\/+$/, ""))
    .map((url) => (url === "" || url.startsWith("/") ? `${window.location.origin}${url}` : url))
    .filter(Boolean);

export const chat = new ChatEngine();
if (typeof window !== "undefined") window.fleetchat = chat;

/** One field of the view, for the page's components; re-renders only when it changes. */
export const useChatField = (field) =>
  useSyncExternalStore(
    chat.subscribe,
    () => chat.view[field],
    () => chat.view[field],
  );

/** Mounted once by the page: starts this tab's connection to the chat fleet. */
export const FleetchatClient = ({ urls }) => {
  useEffect(() => {
    chat.start(resolveUrls(urls));
    // The page has mounted without Reflex's own socket (frontend/chat.py,
    // no_reflex_socket): drop the switch, so no other Reflex app on this host sees it.
    const clear = setTimeout(() => {
      document.cookie = "backend-enabled=; path=/; max-age=0; SameSite=Lax";
    }, 0);
    return () => clearTimeout(clear);
  }, []);
  return null;
};
