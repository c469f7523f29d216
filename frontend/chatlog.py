"""Pure helpers for a room's message log: merge, dedupe, gaps, display lines.

A log is a list of message dicts (the protocol's `message` shape) sorted by
`seq`. Ids are unique; `seq` counts a room's messages without gaps, so a jump
in `seq` means messages were missed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Messages kept per room in a tab; older ones can be fetched again.
LOG_CAP = 1000


@dataclasses.dataclass
class ChatLine:
    """One message as the page shows it."""

    key: str
    user: str
    text: str
    time: str
    own: bool = False
    mention: bool = False
    pending: bool = False


def is_message(data: Any) -> bool:
    """Whether a payload has the fields every stored message carries."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("id"), str)
        and isinstance(data.get("seq"), int)
        and isinstance(data.get("room"), str)
        and isinstance(data.get("text"), str)
        and isinstance(data.get("user"), dict)
    )


def merge(log: list[dict], incoming: Iterable[Any]) -> tuple[list[dict], list[dict]]:
    """Add messages not already in the log; returns (new log, messages added)."""
    seen = {message["id"] for message in log}
    added = []
    for message in incoming:
        if is_message(message) and message["id"] not in seen:
            seen.add(message["id"])
            added.append(message)
    if not added:
        return log, []
    merged = sorted([*log, *added], key=lambda m: (m["seq"], m["id"]))
    return merged[-LOG_CAP:], added


def last_seq(log: list[dict]) -> int:
    return log[-1]["seq"] if log else 0


def missing_before(prior_last_seq: int, message: dict) -> int:
    """How many messages were skipped just before `message`, given the last seq seen."""
    if not prior_last_seq:
        return 0
    return max(0, message["seq"] - prior_last_seq - 1)


def mentions(text: str, name: str) -> bool:
    """Whether `text` has `@name` as a word (case-insensitive)."""
    if not name:
        return False
    return re.search(rf"(?<![\w@])@{re.escape(name)}(?![\w])", text, re.IGNORECASE) is not None


def zone(name: str) -> timezone | ZoneInfo:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def clock(ts: Any, tz: timezone | ZoneInfo) -> str:
    """A message's time (ms since the epoch) as the reader's local HH:MM."""
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return ""
    moment = datetime.fromtimestamp(ts / 1000, tz)
    today = datetime.now(tz).date()
    return moment.strftime("%H:%M") if moment.date() == today else moment.strftime("%b %d, %H:%M")


def lines(log: list[dict], outbox: list[dict], room: str, me: str, own_prefix: str, tz_name: str) -> list[ChatLine]:
    """The lines to show for a room: its log, then this tab's unsent messages."""
    tz = zone(tz_name)
    shown = [
        ChatLine(
            key=message["id"],
            user=str(message["user"].get("name", "?")),
            text=message["text"],
            time=clock(message.get("ts"), tz),
            own=str(message.get("client_id") or "").startswith(own_prefix) if own_prefix else False,
            mention=mentions(message["text"], me),
        )
        for message in log
    ]
    sent = {message.get("client_id") for message in log}
    shown.extend(
        ChatLine(key=item["client_id"], user=me, text=item["text"], time="", own=True, pending=True)
        for item in outbox
        if item["room"] == room and item["client_id"] not in sent
    )
    return shown
