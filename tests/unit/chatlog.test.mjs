// The tab's message log and display helpers (assets/chatlog.js), run by
// tests/unit/test_chatlog_js.py with `node --test`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  LOG_CAP,
  applyState,
  backoff,
  clock,
  cleanName,
  indexOf,
  isPrintable,
  isUpdate,
  mentions,
  merge,
  reactionList,
  typingText,
} from "../../assets/chatlog.js";

const msg = (seq, extra = {}) => ({ id: `m${String(seq).padStart(4, "0")}`, seq, room: "r", text: `t${seq}`, user: { name: "u" }, ...extra });

test("merge appends the next live message and keeps the log sorted by seq", () => {
  const [log, added] = merge([msg(1), msg(2)], [msg(3)]);
  assert.deepEqual(log.map((m) => m.seq), [1, 2, 3]);
  assert.equal(added.length, 1);
});

test("merge drops what the log holds already, and non-messages", () => {
  const start = [msg(1), msg(2)];
  const [log, added] = merge(start, [msg(2), { id: "x" }, null, "text", msg(1)]);
  assert.equal(log, start, "an unchanged log is the same object (the page re-renders nothing)");
  assert.deepEqual(added, []);
});

test("merge puts a page of older history and a filled gap in place", () => {
  const [log] = merge([msg(5), msg(9)], [msg(8), msg(1), msg(6), msg(7)]);
  assert.deepEqual(log.map((m) => m.seq), [1, 5, 6, 7, 8, 9]);
});

test("merge keeps the newest LOG_CAP messages of a long-lived tab", () => {
  const many = Array.from({ length: LOG_CAP + 10 }, (_, i) => msg(i + 1));
  const [log] = merge([], many);
  assert.equal(log.length, LOG_CAP);
  assert.equal(log[0].seq, 11);
  assert.equal(log[log.length - 1].seq, LOG_CAP + 10);
});

test("mentions match @name as a word, any case, and nothing else", () => {
  assert.ok(mentions("hi @Alice!", "alice"));
  assert.ok(mentions("@alice", "alice"));
  assert.ok(!mentions("hi @alicex", "alice"));
  assert.ok(!mentions("mail bob@alice", "alice"));
  assert.ok(!mentions("hi alice", "alice"));
  assert.ok(mentions("hey @a.b", "a.b"), "regex characters in a name are literal");
  assert.ok(!mentions("hey @aXb", "a.b"));
  assert.ok(mentions("ça va @zoë ?", "Zoë"));
  assert.ok(!mentions("anything", ""));
});

test("clock shows today's times as HH:MM and older ones with the date", () => {
  assert.match(clock(Date.now()), /^\d\d:\d\d$/);
  assert.match(clock(Date.now() - 3 * 86_400_000), /\d\d:\d\d/);
  assert.doesNotMatch(clock(Date.now() - 3 * 86_400_000), /^\d\d:\d\d$/);
  for (const bad of [undefined, null, "12", NaN, Infinity]) assert.equal(clock(bad), "");
});

test("names are cleaned of runs of white space; control characters are not printable", () => {
  assert.equal(cleanName("  ada \t lovelace \n"), "ada lovelace");
  assert.equal(cleanName(undefined), "");
  assert.ok(isPrintable("<i>mallory</i> ✓"));
  assert.ok(!isPrintable("bell\u0007"));
  assert.ok(!isPrintable("rtl\u202e"));
});

test("the typing line names up to three people", () => {
  assert.equal(typingText([]), "");
  assert.equal(typingText(["bob"]), "bob is typing…");
  assert.equal(typingText(["a", "b", "c"]), "a, b and c are typing…");
  assert.equal(typingText(["a", "b", "c", "d"]), "Several people are typing…");
});

test("reconnects back off from 250 ms to at most 4 s", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 9].map(backoff), [250, 500, 1000, 2000, 4000, 4000]);
});

const real = (seq, extra = {}) => ({ ...msg(seq), id: String(seq).padStart(12, "0"), ...extra });

test("indexOf finds a message by id in a log with holes, and nothing that is not there", () => {
  const log = [real(1), real(2), real(5), real(9)];
  assert.equal(indexOf(log, "000000000005"), 2);
  assert.equal(indexOf(log, "000000000009"), 3);
  assert.equal(indexOf(log, "000000000003"), -1);
  assert.equal(indexOf([], "000000000001"), -1);
});

test("applyState puts a newer state in place and ignores an older or unknown one", () => {
  const log = [real(1), real(2, { rev: 3, text: "v3" })];
  const [edited, changed] = applyState(log, real(2, { rev: 4, text: "v4" }));
  assert.ok(changed);
  assert.equal(edited[1].text, "v4");
  assert.equal(log[1].text, "v3", "the log it was given is not changed in place");
  assert.deepEqual(applyState(edited, real(2, { rev: 4, text: "again" })), [edited, false]);
  assert.deepEqual(applyState(edited, real(2, { rev: 2, text: "stale" })), [edited, false]);
  assert.deepEqual(applyState(edited, real(7, { rev: 9 })), [edited, false]);
  assert.deepEqual(applyState(edited, { id: "000000000001" }), [edited, false]);
});

test("reactionList counts each emoji and says which ones are mine", () => {
  const message = real(1, { reactions: { "👍": ["a", "b"], "🎉": ["b"], "x": [] } });
  assert.deepEqual(reactionList(message, "a"), [
    { emoji: "👍", count: 2, mine: true },
    { emoji: "🎉", count: 1, mine: false },
  ]);
  assert.deepEqual(reactionList(real(2), "a"), []);
});

test("isUpdate accepts an update event and refuses anything else", () => {
  assert.ok(isUpdate({ room: "r", id: "000000000001", kind: "edit", rev: 1, message: real(1) }));
  assert.ok(!isUpdate({ room: "r", rev: "1", message: real(1) }));
  assert.ok(!isUpdate({ room: "r", rev: 1, message: { id: 1 } }));
  assert.ok(!isUpdate(null));
});
