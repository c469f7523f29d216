"""Payload types: what clients may send, validated before anything else runs.

Client payloads are parsed with pydantic in strict mode so a wrong type is a
clear ``bad_request`` instead of a silent coercion. Server-side messages are
plain dicts (built once, encoded once) to keep the hot path lean.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

ROOM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,39}$"
"""Room names: lower-case slugs of 1-40 letters, digits, '-' and '_'."""
_ROOM_RE = re.compile(ROOM_PATTERN)
NAME_MAX = 32
MESSAGE_ID_RE = re.compile(r"^[0-9]{1,18}$")


def _check_name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= NAME_MAX:
        raise ValueError(f"name must be 1-{NAME_MAX} characters")
    if any(not ch.isprintable() or unicodedata.category(ch) in ("Cf", "Co", "Cs") for ch in value):
        raise ValueError("name must contain printable characters only")
    return value


def _check_room(value: str) -> str:
    value = value.strip().lower()
    if not _ROOM_RE.match(value):
        raise ValueError("room must match " + ROOM_PATTERN)
    return value


def _check_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be empty")
    if "\x00" in value:
        raise ValueError("text must not contain NUL")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("text must not contain lone surrogates") from None
    return value


UserName = Annotated[str, AfterValidator(_check_name)]
RoomName = Annotated[str, AfterValidator(_check_room)]
MessageText = Annotated[str, AfterValidator(_check_text)]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_RE.pattern)]


class Payload(BaseModel):
    """Base for client payloads: strict types, unknown keys (such as a spoofed
    ``user``) dropped so the server alone decides who speaks."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ConnectAuth(Payload):
    name: UserName
    token: str | None = Field(default=None, max_length=4096)


class JoinRequest(Payload):
    room: RoomName
    since: MessageId | None = None
    rev: int | None = Field(default=None, ge=0, le=2**53)
    """With ``since``: the last update ``rev`` the client holds; the ack's ``updates`` are the changes after it."""


class LeaveRequest(Payload):
    room: RoomName
    forget: bool = False
    """For a private room: give up membership too (not only stop listening)."""


class CreateRequest(Payload):
    room: RoomName
    private: bool = False


Username = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class DmRequest(Payload):
    user: Username


class MemberRequest(Payload):
    room: RoomName
    user: Username


class SendRequest(Payload):
    room: RoomName
    text: MessageText
    client_id: ClientId | None = None
    reply_to: MessageId | None = None


def _check_emoji(value: str) -> str:
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs", "Co") for ch in value):
        raise ValueError("emoji must not contain spaces or control characters")
    return value


Emoji = Annotated[str, StringConstraints(min_length=1, max_length=32), AfterValidator(_check_emoji)]


class EditRequest(Payload):
    room: RoomName
    id: MessageId
    text: MessageText
    client_id: ClientId | None = None


class DeleteRequest(Payload):
    room: RoomName
    id: MessageId
    client_id: ClientId | None = None


class ReactRequest(Payload):
    room: RoomName
    id: MessageId
    emoji: Emoji
    on: bool = True
    client_id: ClientId | None = None


class TypingRequest(Payload):
    room: RoomName
    typing: bool


class ReadRequest(Payload):
    room: RoomName
    seq: int = Field(ge=0, le=2**53)
    receipt: bool = True
    """In a DM: let the other person see how far this user has read (a read receipt)."""


class HistoryRequest(Payload):
    room: RoomName
    before: MessageId | None = None
    limit: int = Field(default=50, ge=1, le=500)


SEARCH_MAX = 200
"""Characters of a search query: a query is a few words, not a message."""


def _check_query(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("the query must not be empty")
    if not any(ch.isalnum() for ch in value):
        raise ValueError("the query has no words to search for")
    return value


SearchQuery = Annotated[
    str,
    StringConstraints(max_length=SEARCH_MAX),
    AfterValidator(_check_query),
    Field(json_schema_extra={"minLength": 1}),
]
SearchCursor = Annotated[str, StringConstraints(min_length=2, max_length=120, pattern=r"^[0-9]+:[0-9a-z._-]*$")]
"""A hit's ``cursor``: the page after it (``backend.search``)."""


class SearchRequest(Payload):
    """The ``search`` event; ``GET /api/search`` takes the same as its query string."""

    q: SearchQuery
    room: RoomName | None = None
    before: SearchCursor | None = None
    limit: int = Field(default=20, ge=1, le=100)


TEXT_SCHEMA_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
"""What ``_check_text`` accepts, for the OpenAPI schema: some non-blank character, no NUL."""


class HttpPostMessage(Payload):
    """Body of ``POST /api/rooms/<room>/messages``."""

    name: UserName | None = None
    text: MessageText = Field(json_schema_extra={"minLength": 1, "pattern": TEXT_SCHEMA_PATTERN})
    client_id: ClientId | None = None
    reply_to: MessageId | None = None


class HttpEdit(Payload):
    """Body of ``PATCH /api/rooms/<room>/messages/<id>``."""

    text: MessageText = Field(json_schema_extra={"minLength": 1, "pattern": TEXT_SCHEMA_PATTERN})
    client_id: ClientId | None = None


class HttpReact(Payload):
    """Body of ``POST /api/rooms/<room>/messages/<id>/reactions``."""

    emoji: Emoji
    on: bool = True
    client_id: ClientId | None = None


P = TypeVar("P", bound=Payload)


class ChatError(Exception):
    """A refusal that becomes ``{"ok": false, "error": code, "detail": ...}``."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status

    def ack(self) -> dict[str, Any]:
        return {"ok": False, "error": self.code, "detail": self.detail}


def parse(model: type[P], data: Any) -> P:
    """Validate a client payload or raise ``ChatError('bad_request')`` with a
    short, human-readable reason (never the whole pydantic dump)."""
    if not isinstance(data, dict):
        raise ChatError("bad_request", "payload must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        raise ChatError("bad_request", f"{where}: {first.get('msg', 'invalid')}") from None


def message_id(seq: int) -> str:
    """Ids are zero-padded sequence numbers, so they sort as strings in message order."""
    return f"{seq:012d}"


def seq_of(message_id_: str) -> int:
    return int(message_id_)
