"""Full-text search: the query's terms, highlight segments, the page cursor and
the per-connection rate, shared by both stores and both surfaces.

A query is reduced to its words (letters and digits, lower-cased) and every
word must match: no query syntax reaches FTS5 or ``to_tsquery``, so no input
can fail to parse there. Both indexes tokenize the same way (FTS5 ``unicode61``
without diacritics removal, PostgreSQL's ``simple`` configuration: lower case,
no stemming), so embedded and fleet mode find the same messages.

Results come in *windows*: the ``WINDOW`` newest matches older than the cursor's
position, ranked best first (BM25 in SQLite, ``ts_rank_cd`` in PostgreSQL),
newest first among equals; a page is a slice of a window. Ranking every match
of a common word over millions of messages cannot meet 50 ms, and a chat's
searcher wants recent messages first anyway (bench/README.md, search).
Each hit carries ``cursor``, opaque to clients (``<offset>:<position>``, the
position being the store's own): ``before`` = the last hit's cursor pages on.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

from backend.limits import KeyedBuckets
from backend.models import ChatError

WINDOW = 200
"""Matches ranked together; paging past them moves to the next, older window. Every
search's cost grows with it (the texts ranked, and in one room the rows walked to
find them): at 500 a common word in one room of 1,000,000 messages missed 50 ms p99
in both stores on a loaded machine, at 200 it meets it (bench/README.md, search)."""
MAX_TERMS = 8
"""Words of a query that count (more only make it slower, not better)."""
SEARCH_RATE = (2.0, 20)
"""Searches per second and burst, per connection (a search costs what ~100 sends do)."""

_WORD = re.compile(r"[^\W_]+")
"""A word as both tokenizers see it: letters and digits; anything else separates."""

Segment = dict[str, Any]
"""``{"text": str, "match": bool}``: plain text, never markup."""


def terms(query: str) -> list[str]:
    """The distinct lower-cased words of ``query`` (at most ``MAX_TERMS``); empty: nothing to search."""
    seen: list[str] = []
    for word in _WORD.findall(query.lower()):
        if word not in seen:
            seen.append(word)
    return seen[:MAX_TERMS]


def highlight(text: str, words: list[str]) -> list[Segment]:
    """``text`` cut into segments, those that are one of ``words`` marked: clients
    render each as a text node, so a message can never inject markup."""
    wanted = set(words)
    segments: list[Segment] = []
    start = 0
    for found in _WORD.finditer(text):
        if found.group().lower() not in wanted:
            continue
        if found.start() > start:
            segments.append({"text": text[start : found.start()], "match": False})
        segments.append({"text": found.group(), "match": True})
        start = found.end()
    if start < len(text):
        segments.append({"text": text[start:], "match": False})
    return segments


BM25_K1, BM25_B = 1.2, 0.75


def bm25(texts: list[str], words: list[str]) -> list[float]:
    """Okapi BM25 of each text of a window (higher is better), with every word's IDF
    taken as equal: each hit contains every word, so IDF would only weigh one word
    against another, and FTS5's ``bm25()`` pays for it with a scan of every posting of
    each word (150 ms for a word in most of 1,000,000 messages; bench/README.md)."""
    counted = [_WORD.findall(t.lower()) for t in texts]
    average = sum(len(c) for c in counted) / len(counted) if counted else 1.0
    scores = []
    for tokens in counted:
        norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / (average or 1.0))
        score = 0.0
        for w in words:
            tf = tokens.count(w)
            score += tf * (BM25_K1 + 1) / (tf + norm)
        scores.append(score)
    return scores


def hit(message: dict[str, Any], words: list[str], cursor: str) -> dict[str, Any]:
    """A result: the message's current state, its highlighted text, and where the results after it begin."""
    return message | {"highlight": highlight(str(message.get("text") or ""), words), "cursor": cursor}


@dataclass(frozen=True, slots=True)
class Cursor:
    offset: int
    """Results of the window already given."""
    position: str
    """Where the window starts (the store's own encoding); empty: the newest matches."""

    @staticmethod
    def parse(before: str | None) -> Cursor:
        if before is None:
            return Cursor(0, "")
        offset, sep, position = before.partition(":")
        if not sep or not offset.isdigit() or int(offset) >= WINDOW:
            raise bad_cursor()
        return Cursor(int(offset), position)

    def numbers(self, count: int) -> list[int]:
        """The position as ``count`` 63-bit numbers separated by dots (its first parts)."""
        parts = self.position.split(".", count)[:count]
        # an FTS5 rowid of today's clock (ts * 2**20) has 19 digits
        if len(parts) < count or not all(p.isdigit() and len(p) <= 19 and int(p) < 2**63 for p in parts):
            raise bad_cursor()
        return [int(p) for p in parts]

    def __str__(self) -> str:
        return f"{self.offset}:{self.position}"


def page(ranked: list[Any], full: bool, cursor: Cursor, limit: int, oldest: str) -> tuple[list[tuple[Any, str]], bool]:
    """The slice of a ranked window a page shows, each with the cursor of the results
    after it, and whether more follow. ``full``: older matches lie beyond the window;
    ``oldest``: the position of the window's oldest match (where the next window starts)."""
    shown = []
    for index in range(cursor.offset, min(cursor.offset + limit, len(ranked))):
        after = Cursor(index + 1, cursor.position) if index + 1 < len(ranked) else Cursor(0, oldest)
        shown.append((ranked[index], str(after)))
    return shown, cursor.offset + limit < len(ranked) or full


def bad_cursor() -> ChatError:
    return ChatError("bad_request", "before: not a cursor this server gave", 400)


_buckets: weakref.WeakKeyDictionary[Any, KeyedBuckets] = weakref.WeakKeyDictionary()


def allow(owner: Any, key: str) -> None:
    """Spend one of ``key``'s searches (a connection's sid, an HTTP user) or refuse with ``rate_limited``."""
    buckets = _buckets.get(owner)
    if buckets is None:
        buckets = _buckets[owner] = KeyedBuckets(*SEARCH_RATE, size=50_000)
    if not buckets.take(key):
        raise ChatError("rate_limited", "too many searches: retry in a second", 429)
