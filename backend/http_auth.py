"""Sign-up, sign-in, sign-out and "who am I" over HTTP (``/api/auth/*``, ``/api/me``).

Failed logins are counted per username and per client address in the account
store (Redis in a fleet, so the whole fleet counts together); past either
limit, logins answer ``429 rate_limited`` with ``Retry-After`` until the
window ends. An unknown username and a wrong password get the same answer,
and cost the same Argon2 verification.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, current_app, request
from quart_schema import document_response, validate_request, validate_response

from backend.accounts import UsernameTaken, normalize_username
from backend.auth import Identity
from backend.chat import Chat
from backend.limits import client_address
from backend.models import ChatError, Payload, UserName, parse
from backend.passwords import hash_password, verify_password, weakness
from backend.store.base import StoreUnavailable

auth_api = Blueprint("auth_api", __name__)

INVALID = "invalid_credentials"


class SignupIn(Payload):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)
    display_name: str | None = Field(default=None, max_length=128)


class LoginIn(Payload):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class AccountOut(BaseModel):
    id: str
    username: str
    name: str


class SignedInOut(BaseModel):
    ok: bool = True
    user: AccountOut
    token: str


class MeOut(BaseModel):
    ok: bool = True
    user: dict[str, Any]


class AuthErrorOut(BaseModel):
    ok: bool = False
    error: str
    detail: str


def _chat() -> Chat:
    return current_app.extensions["fleetchat"]


def _identity() -> Identity:
    identity = _chat().identity
    assert identity is not None
    return identity


def _address() -> str:
    chat = _chat()
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), chat.settings.trusted_proxy_set)


async def _store(awaitable: Any) -> Any:
    try:
        return await awaitable
    except StoreUnavailable:
        raise ChatError("unavailable", "accounts are unreachable right now, retry shortly", 503) from None


@auth_api.post("/api/auth/signup")
@validate_request(SignupIn)
@validate_response(SignedInOut, 201)
@document_response(AuthErrorOut, 400)
@document_response(AuthErrorOut, 409)
@document_response(AuthErrorOut, 503)
async def signup(data: SignupIn) -> tuple[SignedInOut, int]:
    """Create an account and sign in: ``400 weak_password``, ``409 username_taken``."""
    username = normalize_username(data.username)
    name = parse_display_name(data.display_name or username)
    why = weakness(data.password)
    if why:
        raise ChatError("weak_password", why, 400)
    identity = _identity()
    try:
        account = await _store(identity.accounts.create(username, name, await hash_password(data.password)))
    except UsernameTaken:
        raise ChatError("username_taken", f"{username!r} is taken: pick another, or sign in", 409) from None
    session = await _store(identity.accounts.start_session(account.id, _chat().settings.token_ttl_seconds))
    token = await _store(identity.issue(account, session))
    return SignedInOut(user=AccountOut(**account.public()), token=token), 201


def parse_display_name(raw: str) -> str:
    class _Name(Payload):
        name: UserName

    return parse(_Name, {"name": raw.strip()}).name


@auth_api.post("/api/auth/login")
@validate_request(LoginIn)
@validate_response(SignedInOut, 200)
@document_response(AuthErrorOut, 400)
@document_response(AuthErrorOut, 401)
@document_response(AuthErrorOut, 429)
@document_response(AuthErrorOut, 503)
async def login(data: LoginIn) -> tuple[SignedInOut, int] | tuple[dict[str, Any], int, dict[str, str]]:
    """Sign in: ``401 invalid_credentials`` alike for an unknown user and a wrong password."""
    chat, identity = _chat(), _identity()
    s = chat.settings
    try:
        username = normalize_username(data.username)
    except ChatError:
        username = ""  # never an account: verified against the dummy hash all the same
    keys = [(f"user:{username}", s.login_failures_per_user), (f"addr:{_address()}", s.login_failures_per_address)]
    for key, limit in keys:
        count, left = await _store(identity.accounts.failures(key))
        if count >= limit:
            retry = max(1, math.ceil(left))
            body = {"ok": False, "error": "rate_limited", "detail": f"too many failed logins: retry in {retry}s"}
            chat.metrics.refused.labels("rate_limited").inc()
            return body, 429, {"Retry-After": str(retry)}
    account = await _store(identity.accounts.by_username(username)) if username else None
    if not await verify_password(account.password_hash if account else None, data.password) or account is None:
        for key, _ in keys:
            await _store(identity.accounts.count_failure(key, s.login_window_seconds))
        raise ChatError(INVALID, "unknown username or wrong password", 401)
    session = await _store(identity.accounts.start_session(account.id, s.token_ttl_seconds))
    token = await _store(identity.issue(account, session))
    return SignedInOut(user=AccountOut(**account.public()), token=token), 200


async def _bearer() -> tuple[dict[str, Any], str | None]:
    header = request.headers.get("Authorization")
    if not header:
        raise ChatError("unauthorized", "Authorization: Bearer <token> is required", 401)
    found = await _store(_identity().bearer(header))
    assert found is not None
    return found


@auth_api.post("/api/auth/logout")
@document_response(AuthErrorOut, 400)
@document_response(AuthErrorOut, 401)
@document_response(AuthErrorOut, 503)
async def logout() -> tuple[str, int]:
    """End the token's session: it is refused everywhere, and its sockets are closed."""
    _, session = await _bearer()
    if session is None:
        raise ChatError("bad_request", "an operator's token has no session to end; it expires by itself", 400)
    await _store(_identity().accounts.end_session(session))
    await _chat().revoke_session(session)
    return "", 204


@auth_api.get("/api/me")
@validate_response(MeOut)
@document_response(AuthErrorOut, 401)
@document_response(AuthErrorOut, 503)
async def me() -> MeOut:
    """The signed-in user of the Bearer token."""
    user, _ = await _bearer()
    return MeOut(user=dict(user))
