"""The rules of a message's life after it is sent: edit, delete, react.

One place says who may change a message and what the change does to its
stored state, for the stores that apply changes in Python (SQLite, the
archive). The Redis store applies the same rules inside its Lua script
(``backend/store/redis.py``); the integration tests run both against the
same expectations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from backend.models import ChatError

Kind = Literal["edit", "delete", "reaction"]
MAX_EMOJIS = 20
"""Distinct reactions per message: a flood of one-off emoji cannot grow a message without bound."""


@dataclass(frozen=True, slots=True)
class Change:
    """A request to change one stored message (``seq`` in ``room``) on behalf of ``actor``."""

    room: str
    seq: int
    kind: Kind
    actor: dict[str, Any]
    client_id: str
    ts: int
    text: str = ""
    emoji: str = ""
    on: bool = True
    moderator: bool = False
    """The actor moderates this room: may delete other people's messages."""


REFUSALS: dict[str, tuple[str, str, int]] = {
    "not_found": ("not_found", "no such message in this room", 404),
    "deleted": ("not_found", "that message was deleted", 404),
    "forbidden_edit": ("forbidden", "only its author can edit a message", 403),
    "forbidden_delete": ("forbidden", "only its author or a moderator can delete a message", 403),
    "too_many_reactions": ("bad_request", f"a message takes at most {MAX_EMOJIS} different reactions", 400),
    "reply_to": ("not_found", "reply_to: no such message in this room", 404),
}
"""Why a change is refused, by the reason the stores give (the Redis script returns these names)."""


def refusal(reason: str) -> ChatError:
    return ChatError(*REFUSALS[reason])


def apply(message: dict[str, Any], change: Change) -> dict[str, Any] | None:
    """The message's new state, or None when the change changes nothing (a
    repeated delete, a reaction already there). Raises ``ChatError`` when the
    actor may not make it."""
    mine = message["user"]["id"] == change.actor["id"]
    if message.get("deleted"):
        if change.kind == "delete":
            return None
        raise refusal("deleted")
    new = dict(message)
    if change.kind == "edit":
        if not mine:
            raise refusal("forbidden_edit")
        if message["text"] == change.text:
            return None
        new["text"] = change.text
        new["edited_ts"] = change.ts
    elif change.kind == "delete":
        if not (mine or change.moderator):
            raise refusal("forbidden_delete")
        new["text"] = ""
        new["deleted"] = True
        new.pop("reactions", None)
        new.pop("edited_ts", None)
    else:
        reactions = {k: list(v) for k, v in (message.get("reactions") or {}).items()}
        users = reactions.get(change.emoji, [])
        uid = change.actor["id"]
        if change.on == (uid in users):
            return None
        if change.on:
            if change.emoji not in reactions and len(reactions) >= MAX_EMOJIS:
                raise refusal("too_many_reactions")
            reactions[change.emoji] = [*users, uid]
        else:
            users.remove(uid)
            if users:
                reactions[change.emoji] = users
            else:
                del reactions[change.emoji]
        if reactions:
            new["reactions"] = reactions
        else:
            new.pop("reactions", None)
    return new


def update_event(message: dict[str, Any], kind: str, rev: int) -> dict[str, Any]:
    """The ``update`` event that announces a message's new state."""
    return {"room": message["room"], "id": message["id"], "kind": kind, "rev": rev, "message": message}
