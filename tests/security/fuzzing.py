"""What the fuzz suites share: a background event loop that owns long-lived
clients (hypothesis drives them from the test thread), JSON strategies of
every shape and size, and the checks of what a well-behaved observer saw."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.security.helpers import examples

T = TypeVar("T")

ERROR_CODES = {
    "bad_request",
    "not_in_room",
    "not_found",
    "too_large",
    "too_many_rooms",
    "rate_limited",
    "unauthorized",
    "unknown_event",
}
"""Codes a bad payload may get; ``internal`` and ``unavailable`` are failures here."""
MESSAGE_KEYS = {"id", "seq", "room", "user", "text", "ts", "client_id"}
CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` blocks the caller until a coroutine ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()  # its self-pipe sockets too (an unclosed loop is a ResourceWarning)


def fuzz_settings(default: int = 2000) -> settings:
    return settings(
        max_examples=examples(default),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


# Text with every kind of character, lone surrogates and NUL included.
any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=64)
big_text = st.integers(1000, 70_000).map(lambda n: "x" * n)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=8) | st.dictionaries(any_text, children, max_size=8),
    max_leaves=40,
)
rooms = st.sampled_from(["fz-a", "fz-b", "general", " FZ-A ", "fz-never-joined", "", "a" * 41, "Ünïcode"]) | json_values
ids = st.sampled_from(["000000000001", "1", "0", "999999999999999999", "-1", "abc", ""]) | json_values
texts = st.sampled_from(["hi", "  ", "", "\x00", "<script>x</script>", "x" * 4000, "x" * 4001]) | any_text | json_values
extra = st.dictionaries(
    st.sampled_from(["user", "id", "seq", "ts", "room_id", "__proto__", "name"]) | any_text, json_values, max_size=3
)


def near(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Payloads shaped like the real one: each field right, wrong or missing, plus stray keys."""
    optional = st.fixed_dictionaries({}, optional=fields)
    return st.builds(lambda base, more: {**more, **base}, optional, extra)


# Valid messages with hostile content (markup, any character, a spoofed user),
# so what does get broadcast is fuzzed too, not only what is refused.
valid_messages = st.builds(
    lambda room, text, cid, more: {**more, "room": room, "text": text, "client_id": cid},
    st.sampled_from(["fz-a", "fz-b", " FZ-B "]),
    st.text(st.characters() | st.characters(categories=["Cs"]), min_size=1, max_size=300)
    | st.sampled_from(["<img src=x onerror=alert(1)>", "@observer hi", "x" * 4000]),
    st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z"),
    extra,
)

PAYLOADS: dict[str, st.SearchStrategy[Any]] = {
    "join": near({"room": rooms, "since": ids}),
    "leave": near({"room": rooms}),
    "message": valid_messages | near({"room": rooms, "text": texts, "client_id": any_text | ids | json_values}),
    "typing": near({"room": rooms, "typing": st.booleans() | json_values}),
    "history": near({"room": rooms, "before": ids, "limit": st.integers(-10, 1000) | json_values}),
}


# Sizes up to and over the packet limit (one case in ten): big strings alone,
# in lists, and as the text of an otherwise valid message.
big_values = st.one_of(
    big_text,
    st.lists(big_text, min_size=1, max_size=4),
    st.dictionaries(any_text, big_text, min_size=1, max_size=4),
    st.builds(lambda t: {"room": "fz-a", "text": t, "client_id": "big"}, big_text),
)


def args_for(event: str) -> st.SearchStrategy[tuple[Any, ...]]:
    """The arguments of one emit: mostly one payload, sometimes none, several or a big one."""
    one = PAYLOADS.get(event, json_values) | json_values
    usual = st.one_of(one.map(lambda p: (p,)), st.lists(json_values, max_size=3).map(tuple))
    return st.integers(0, 9).flatmap(lambda i: big_values.map(lambda p: (p,)) if i == 0 else usual)


USER_KEYS = {"id", "name", "guest", "username"}
"""What a user object may hold: a guest carries ``guest``, an account its ``username``."""


def invalid_broadcasts(events: list[tuple[str, Any]], users: set[str]) -> list[str]:
    """Everything an observer received that breaks the protocol: wrong shape,
    a user it did not come from, text that should have been refused, a seq gap."""
    problems: list[str] = []
    last_seq: dict[str, int] = {}
    for name, data in events:
        if name == "message":
            if not isinstance(data, dict) or set(data) != MESSAGE_KEYS:
                problems.append(f"message of wrong shape: {data!r:.200}")
                continue
            room, seq, text = data["room"], data["seq"], data["text"]
            if not (isinstance(seq, int) and data["id"] == f"{seq:012d}" and isinstance(data["ts"], int)):
                problems.append(f"bad id/seq/ts: {data!r:.200}")
            if data["user"].get("id") not in users or not {"id", "name"} <= set(data["user"]) <= USER_KEYS:
                problems.append(f"spoofed or unknown user: {data['user']!r:.200}")
            if not isinstance(text, str) or not text.strip() or "\x00" in text or len(text) > 4000:
                problems.append(f"text that must have been refused: {text!r:.100}")
            if not isinstance(data["client_id"], str) or not CLIENT_ID.match(data["client_id"]):
                problems.append(f"bad client_id: {data['client_id']!r:.100}")
            if room in last_seq and seq != last_seq[room] + 1:
                problems.append(f"seq gap or repeat in {room}: {last_seq[room]} then {seq}")
            last_seq[room] = seq
        elif name == "typing":
            ok = isinstance(data, dict) and set(data) == {"room", "user", "typing"} and isinstance(data["typing"], bool)
            if not ok or data["user"].get("id") not in users:
                problems.append(f"bad typing event: {data!r:.200}")
        elif name == "notification":
            msg = data.get("message") if isinstance(data, dict) else None
            if data.get("kind") != "mention" or not isinstance(msg, dict) or set(msg) != MESSAGE_KEYS:
                problems.append(f"bad notification: {data!r:.200}")
            elif msg["user"].get("id") not in users or "@" not in msg["text"]:
                problems.append(f"notification of a message that names no one: {data!r:.200}")
        elif name == "presence":
            if not isinstance(data, dict) or not isinstance(data.get("members"), list) or "room" not in data:
                problems.append(f"bad presence event: {data!r:.200}")
        else:
            problems.append(f"unexpected event {name!r}: {data!r:.200}")
    return problems
