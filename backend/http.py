"""The HTTP API (Quart): health, rooms, history, posting over plain HTTP, metrics.

Every error is a JSON body ``{"ok": false, "error", "detail"}`` with a 4xx/5xx
status, and the schema at ``/openapi.json`` is generated from the same
pydantic models that validate the requests.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from quart import Blueprint, Quart, Response, current_app, request
from quart_schema import (
    RequestSchemaValidationError,
    document_response,
    hide,
    validate_querystring,
    validate_request,
    validate_response,
)
from werkzeug.exceptions import HTTPException

from backend import accel, origins
from backend import search as search_
from backend.chat import Chat
from backend.http_auth import auth_api
from backend.limits import KeyedBuckets
from backend.models import (
    MESSAGE_ID_RE,
    SEARCH_MAX,
    ChatError,
    HttpEdit,
    HttpPostMessage,
    HttpReact,
    JoinRequest,
    MessageId,
    RoomName,
    SearchCursor,
    SearchRequest,
    parse,
)
from backend.presence import User
from backend.store.base import StoreUnavailable

api = Blueprint("api", __name__)


class RoomOut(BaseModel):
    name: str
    members: int


class RoomsOut(BaseModel):
    ok: bool = True
    rooms: list[RoomOut]


class UserOut(BaseModel):
    id: str
    name: str
    username: str | None = None
    guest: bool | None = None


class MessageOut(BaseModel):
    id: str
    seq: int
    room: str
    user: UserOut
    text: str
    """Empty once deleted."""
    ts: int
    client_id: str
    reply_to: str | None = None
    rev: int | None = None
    """The room's update rev of the message's latest change."""
    edited_ts: int | None = None
    deleted: bool | None = None
    reactions: dict[str, list[str]] | None = None
    """Emoji -> ids of the users who reacted with it."""


class ChangedOut(BaseModel):
    ok: bool = True
    id: str
    rev: int
    message: MessageOut


class PageQuery(BaseModel):
    before: MessageId | None = None
    limit: int = Field(default=50, ge=1, le=500)


class PageOut(BaseModel):
    ok: bool = True
    room: str
    messages: list[MessageOut]
    more: bool


class PostedOut(BaseModel):
    ok: bool = True
    id: str
    seq: int
    ts: int


class StatusOut(BaseModel):
    ok: bool
    detail: str = ""


class AccelCutOut(BaseModel):
    cut: str
    library: str
    versions: dict[str, str]
    """distribution -> the exact version the cut is written against."""
    applied: bool
    why: str


class ReadyOut(StatusOut):
    accel: list[AccelCutOut]
    """The fast path's cuts (backend/accel/) and whether each applied."""


class ErrorOut(BaseModel):
    ok: bool = False
    error: str
    detail: str


def _chat() -> Chat:
    return current_app.extensions["fleetchat"]


def _room(room: str) -> str:
    return parse(JoinRequest, {"room": room}).room


@api.get("/healthz")
@validate_response(StatusOut)
async def healthz() -> StatusOut:
    """The process is up."""
    return StatusOut(ok=True)


@api.get("/readyz")
@validate_response(ReadyOut, 200)
@validate_response(ReadyOut, 503)
async def readyz() -> tuple[ReadyOut, int]:
    """The store and the message bus answer; 503 otherwise. ``accel`` lists the fast path's cuts."""
    chat = _chat()
    cuts = [AccelCutOut(**cut) for cut in accel.details()]
    drain = current_app.extensions.get("fleetchat_drain")
    if drain is not None and drain.draining:
        return ReadyOut(ok=False, detail="draining: this instance is shutting down", accel=cuts), 503
    if not await chat.store.ping():
        return ReadyOut(ok=False, detail="store unavailable", accel=cuts), 503
    bus_ping = current_app.extensions.get("fleetchat_bus_ping")
    if bus_ping is not None and not await bus_ping():
        return ReadyOut(ok=False, detail="message bus unavailable", accel=cuts), 503
    return ReadyOut(ok=True, accel=cuts), 200


@api.get("/api/rooms")
@validate_response(RoomsOut)
@document_response(ErrorOut, 503)
async def list_rooms() -> RoomsOut:
    """Rooms with their member counts: the public ones, and with a Bearer token the
    private rooms and DMs of that user."""
    return RoomsOut(rooms=[RoomOut(**r) for r in await _chat().rooms_for(await _bearer_user())])


@api.get("/api/rooms/<room>/messages")
@validate_querystring(PageQuery)
@validate_response(PageOut)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 403)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 503)
async def get_messages(room: str, query_args: PageQuery) -> PageOut:
    """A page of history, oldest first; ``before`` pages further back."""
    name = _room(room)
    messages, more = await _chat().page(name, query_args.before, query_args.limit, await _bearer_user())
    return PageOut(room=name, messages=[MessageOut(**m) for m in messages], more=more)


@api.post("/api/rooms/<room>/messages")
@validate_request(HttpPostMessage)
@validate_response(PostedOut, 201)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 409)
@document_response(ErrorOut, 403)
@document_response(ErrorOut, 404)
@document_response(ErrorOut, 413)
@document_response(ErrorOut, 429)
@document_response(ErrorOut, 503)
async def post_message(room: str, data: HttpPostMessage) -> tuple[PostedOut, int]:
    """Post a message over plain HTTP; it reaches every socket in the room.

    With ``Authorization: Bearer <token>`` the token, not ``name``, says who
    posts; without one, ``name`` posts as a guest where guests are allowed."""
    chat = _chat()
    name = _room(room)
    assert chat.identity is not None
    found = await _bearer()
    if found is None:
        if data.name is None:
            raise ChatError("bad_request", "name is required", 400)
        try:
            user = await chat.identity.guest(data.name)
        except StoreUnavailable:
            raise _accounts_down() from None
    else:
        user = found[0]
    _limit_address("too many posts from this address")
    if await chat._store_call(chat.store.room_info(name, create=False)) is None:
        raise ChatError("not_found", f"no room {name!r}; join it first to create it", 404)
    await chat.check_readable(user, name)
    ack = await chat.send(user, name, data.text, data.client_id, data.reply_to)
    return PostedOut(id=ack["id"], seq=ack["seq"], ts=ack["ts"]), 201


def _accounts_down() -> ChatError:
    return ChatError("unavailable", "accounts are unreachable right now, retry shortly", 503)


async def _bearer() -> tuple[User, str | None] | None:
    """``Identity.bearer`` of this request; an account store that is down answers 503."""
    chat = _chat()
    assert chat.identity is not None
    try:
        return await chat.identity.bearer(request.headers.get("Authorization"))
    except StoreUnavailable:
        raise _accounts_down() from None


def _limit_address(detail: str) -> None:
    limits: KeyedBuckets = current_app.extensions["fleetchat_http_limits"]
    if not limits.take(request.remote_addr or "unknown"):
        raise ChatError("rate_limited", detail, 429)


async def _bearer_user() -> User | None:
    """The account of a Bearer token if the request has one (routes that anyone may call)."""
    if request.headers.get("Authorization") is None:
        return None
    found = await _bearer()
    return None if found is None else found[0]


async def _signed_in() -> User:
    """The account of the request's Bearer token (changes need one: a guest's name proves nothing over HTTP)."""
    found = await _bearer()
    if found is None:
        raise ChatError("unauthorized", "sign in: send Authorization: Bearer <token>", 401)
    _limit_address("too many requests from this address")
    return found[0]


async def _signed_in_reader(room: str) -> tuple[User, str]:
    """The Bearer account, which must be allowed to read ``room`` (a member, if it is private)."""
    user = await _signed_in()
    name = _room(room)
    await _chat().check_readable(user, name)
    return user, name


def _message_id(message_id: str) -> str:
    if not MESSAGE_ID_RE.match(message_id):
        raise ChatError("bad_request", "a message id is its zero-padded seq", 400)
    return message_id


def _changed(ack: dict[str, Any]) -> ChangedOut:
    return ChangedOut(id=ack["id"], rev=ack["rev"], message=MessageOut(**ack["message"]))


def _change_route(fn: Any) -> Any:
    for status in (400, 401, 403, 404, 413, 429, 503):
        fn = document_response(ErrorOut, status)(fn)
    return validate_response(ChangedOut)(fn)


class MyRoomOut(BaseModel):
    room: str
    unread: int
    last_seq: int
    read_seq: int
    private: bool
    dm: bool
    peer: UserOut | None = None
    """For a DM: the other person."""


class MyRoomsOut(BaseModel):
    ok: bool = True
    rooms: list[MyRoomOut]


@api.get("/api/me/rooms")
@validate_response(MyRoomsOut)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 503)
async def my_rooms() -> MyRoomsOut:
    """The rooms of the signed-in user (Bearer), with unread counts as of their read marks."""
    user = await _signed_in()
    return MyRoomsOut(rooms=[MyRoomOut(**r) for r in await _chat().my_rooms(user)])


class SearchArgs(BaseModel):
    """The query string of ``GET /api/search`` (checked again as the ``search`` event's payload)."""

    q: str = Field(min_length=1, max_length=SEARCH_MAX)
    room: RoomName | None = None
    before: SearchCursor | None = None
    limit: int = Field(default=20, ge=1, le=100)


class SegmentOut(BaseModel):
    text: str
    match: bool


class HitOut(MessageOut):
    highlight: list[SegmentOut]
    """The text in segments, the matched words marked: render each as a text node."""
    cursor: str
    """``before`` for the results after this one."""


class SearchOut(BaseModel):
    ok: bool = True
    messages: list[HitOut]
    more: bool
    next: str | None = None
    """The last hit's ``cursor`` when ``more``."""


@api.get("/api/search")
@validate_querystring(SearchArgs)
@validate_response(SearchOut)
@document_response(ErrorOut, 400)
@document_response(ErrorOut, 401)
@document_response(ErrorOut, 403)
@document_response(ErrorOut, 429)
@document_response(ErrorOut, 503)
async def search_messages(query_args: SearchArgs) -> SearchOut:
    """Full-text search (Bearer) over every room the user may read, best match first
    within each window of the newest matches; ``room`` narrows it to one room."""
    user = await _signed_in()
    req = parse(SearchRequest, query_args.model_dump(exclude_none=True))
    search_.allow(_chat(), "user:" + user["id"])
    found = await _chat().find(user, req)
    return SearchOut(messages=[HitOut(**m) for m in found["messages"]], more=found["more"], next=found["next"])


@api.patch("/api/rooms/<room>/messages/<message_id>")
@validate_request(HttpEdit)
@_change_route
async def edit_message(room: str, message_id: str, data: HttpEdit) -> ChangedOut:
    """Edit a message (its author only, Bearer); the room gets an ``update``."""
    user, name = await _signed_in_reader(room)
    ack = await _chat().change(user, name, _message_id(message_id), "edit", data.client_id, text=data.text)
    return _changed(ack)


@api.delete("/api/rooms/<room>/messages/<message_id>")
@_change_route
async def delete_message(room: str, message_id: str) -> ChangedOut:
    """Delete a message (its author or a moderator, Bearer): a tombstone stays, its text is gone."""
    user, name = await _signed_in_reader(room)
    client_id = request.args.get("client_id")
    if client_id is not None and not (1 <= len(client_id) <= 64 and client_id.replace("-", "").isalnum()):
        raise ChatError("bad_request", "client_id: 1-64 letters, digits or '-'", 400)
    return _changed(await _chat().change(user, name, _message_id(message_id), "delete", client_id))


@api.post("/api/rooms/<room>/messages/<message_id>/reactions")
@validate_request(HttpReact)
@_change_route
async def react_to_message(room: str, message_id: str, data: HttpReact) -> ChangedOut:
    """Add (``on``) or take back a reaction (Bearer); the room gets an ``update``."""
    user, name = await _signed_in_reader(room)
    ack = await _chat().change(
        user, name, _message_id(message_id), "reaction", data.client_id, emoji=data.emoji, on=data.on
    )
    return _changed(ack)


@api.get("/metrics")
@hide  # Prometheus text, not part of the JSON API
async def metrics() -> Response:
    """Prometheus metrics of this instance."""
    registry = _chat().metrics.registry
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _error(code: str, detail: str, status: int) -> tuple[dict[str, Any], int]:
    return {"ok": False, "error": code, "detail": detail}, status


def install(app: Quart, chat: Chat) -> None:
    app.extensions["fleetchat"] = chat
    # A body over the packet cap is refused 413 ``too_large`` unread, as on the other transports.
    app.config["MAX_CONTENT_LENGTH"] = chat.settings.max_payload_bytes
    app.extensions["fleetchat_http_limits"] = KeyedBuckets(chat.settings.rate, chat.settings.rate_burst)
    app.register_blueprint(api)
    app.register_blueprint(auth_api)
    origins.install(app, chat.settings)

    @app.errorhandler(ChatError)
    async def chat_error(exc: ChatError) -> tuple[dict[str, Any], int]:
        chat.metrics.refused.labels(exc.code).inc()
        return _error(exc.code, exc.detail, exc.status)

    @app.errorhandler(RequestSchemaValidationError)
    async def schema_error(exc: RequestSchemaValidationError) -> tuple[dict[str, Any], int]:
        return _error("bad_request", str(exc.validation_error)[:500], 400)

    @app.errorhandler(UnicodeDecodeError)
    async def not_utf8(exc: UnicodeDecodeError) -> tuple[dict[str, Any], int]:
        return _error("bad_request", "the body must be UTF-8 JSON", 400)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> tuple[dict[str, Any], int, dict[str, str]]:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 500: "internal"}
        code = codes.get(exc.code or 400, "bad_request")
        body, status = _error(code, exc.description or exc.name, exc.code or 400)
        allow = getattr(exc, "valid_methods", None)
        return body, status, ({"Allow": ", ".join(allow)} if allow else {})
