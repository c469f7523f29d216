"""@mentions: who a message mentions and the notification it earns.

Shared by the in-process notifier (embedded mode) and ``backend.worker``
(fleet), so both notify exactly the same people.
"""

from __future__ import annotations

import re
from typing import Any

_MENTION = re.compile(r"(?<![\w@])@([^\s@,.;:!?()\[\]{}<>\"']{1,32})")


def mention_key(name: str) -> str:
    """How a name is addressed: spaces dropped, case folded (``@Ann Lee`` -> ``annlee``)."""
    return "".join(name.split()).casefold()


def mention_room(name: str) -> str:
    """The Socket.IO room every socket of a name enters on connect. Chat room
    names cannot contain '@', so these never collide with them."""
    return "@" + mention_key(name)


def mentioned(message: dict[str, Any]) -> set[str]:
    """Mention keys in a message's text, minus the sender."""
    keys = {mention_key(m) for m in _MENTION.findall(message.get("text", ""))}
    keys.discard(mention_key(message["user"]["name"]))
    return keys


def notification(message: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "mention", "room": message["room"], "message": message}


def targets(message: dict[str, Any], private: bool) -> list[tuple[str, dict[str, Any]]]:
    """Where a message's mention notifications go: ``(Socket.IO room, payload)`` pairs.

    In a public room, to every socket of each name it mentions. In a private
    room, a mention must not carry the message to someone outside it, so the
    notification goes to the room itself (only its members' sockets are there),
    naming who was mentioned; each client shows it only if it is one of them."""
    keys = mentioned(message)
    if not keys:
        return []
    if private:
        return [(message["room"], {**notification(message), "mentions": sorted(keys)})]
    payload = notification(message)
    return [("@" + key, payload) for key in keys]
