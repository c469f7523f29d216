"""Messages and events as the writers put them on ``fc:archive``."""

from __future__ import annotations

from typing import Any


def message(room: str, seq: int, *, rev: int = 0, text: str | None = "hi", user: str = "u1", **extra: Any) -> dict:
    body: dict[str, Any] = {
        "id": f"{seq:012d}",
        "seq": seq,
        "room": room,
        "user": {"id": user, "name": user},
        "ts": 1_700_000_000_000 + seq,
        "client_id": f"c{seq}",
    }
    if text is not None:
        body["text"] = text
    if rev:
        body["rev"] = rev
    return body | extra


def sent(room: str, seq: int, **kwargs: Any) -> dict:
    return {"type": "message", "message": message(room, seq, **kwargs)}


def changed(room: str, seq: int, rev: int, kind: str = "edit", **kwargs: Any) -> dict:
    if kind == "delete":
        kwargs |= {"text": None, "deleted": True}
    return {
        "type": "update",
        "rev": rev,
        "kind": kind,
        "ts": 1_800_000_000_000 + rev,
        "message": message(room, seq, rev=rev, **kwargs),
    }
