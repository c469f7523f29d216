// Pure helpers of the tab's chat engine (fleetchat.js): a room's message log,
// mentions, times and names. No imports, so `node --test` checks them as they are
// (tests/unit/chatlog.test.mjs).
//
// A log is a list of message objects (the protocol's `message` shape) sorted by
// `seq`. Ids are unique; `seq` counts a room's messages without gaps, so a jump
// in `seq` means messages were missed.

// Messages kept per room in a tab; older ones can be fetched again.
export const LOG_CAP = 1000;

export const cleanName = (value) => String(value ?? "").split(/\s+/).filter(Boolean).join(" ");
export const isPrintable = (value) => !/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(value);
export const randomKey = (n) => {
  const bytes = new Uint8Array(n);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
};
export const backoff = (failures) => Math.min(250 * 2 ** Math.max(failures - 1, 0), 4000);
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const isMessage = (data) =>
  !!data &&
  typeof data === "object" &&
  typeof data.id === "string" &&
  Number.isInteger(data.seq) &&
  typeof data.room === "string" &&
  typeof data.text === "string" &&
  !!data.user &&
  typeof data.user === "object";

/** Merge messages into a log sorted by seq; returns [log, added]. */
export const merge = (log, incoming) => {
  const seen = new Set(log.map((m) => m.id));
  const added = [];
  for (const message of incoming ?? []) {
    if (isMessage(message) && !seen.has(message.id)) {
      seen.add(message.id);
      added.push(message);
    }
  }
  if (added.length === 0) return [log, added];
  const last = log.length ? log[log.length - 1] : null;
  let merged;
  if (added.length === 1 && (!last || added[0].seq > last.seq)) {
    merged = [...log, added[0]]; // the common case: the next live message
  } else {
    merged = [...log, ...added].sort((a, b) => a.seq - b.seq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
  return [merged.length > LOG_CAP ? merged.slice(merged.length - LOG_CAP) : merged, added];
};

export const mentions = (text, name) => {
  if (!name) return false;
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(?<![\\p{L}\\p{N}_@])@${escaped}(?![\\p{L}\\p{N}_])`, "iu").test(text);
};

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

/** A message's time (ms since the epoch) as the reader's local HH:MM. */
export const clock = (ts) => {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "";
  const moment = new Date(ts);
  return moment.toDateString() === new Date().toDateString() ? clockFormat.format(moment) : dayFormat.format(moment);
};

export const typingText = (names) => {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length <= 3) return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} are typing…`;
  return "Several people are typing…";
};

export const byName = (a, b) => a.toLowerCase().localeCompare(b.toLowerCase());


export const isUpdate = (data) =>
  !!data && typeof data === "object" && typeof data.room === "string" && Number.isInteger(data.rev) && isMessage(data.message);

/** Index of the message with `id` in a log sorted by seq (ids are zero-padded seqs), or -1. */
export const indexOf = (log, id) => {
  const seq = Number.parseInt(id, 10);
  let lo = 0;
  let hi = log.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (log[mid].seq === seq) return log[mid].id === id ? mid : -1;
    if (log[mid].seq < seq) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
};

/** A message's new state (an edit, a delete, a reaction) put into a log; returns [log, changed].
 * A state older than the one held (a lower `rev`) changes nothing, so updates may arrive twice. */
export const applyState = (log, state) => {
  if (!isMessage(state)) return [log, false];
  const at = indexOf(log, state.id);
  if (at < 0 || (log[at].rev ?? 0) >= (state.rev ?? 0)) return [log, false];
  const next = log.slice();
  next[at] = state;
  return [next, true];
};

/** A message's reactions as chips: [{emoji, count, mine}], in the order they were first given. */
export const reactionList = (message, me) =>
  Object.entries(message?.reactions ?? {})
    .filter(([, users]) => Array.isArray(users) && users.length > 0)
    .map(([emoji, users]) => ({ emoji, count: users.length, mine: users.includes(me) }));
