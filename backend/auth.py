"""Who a connection is: an anonymous name, or a signed token when required.

With ``CHAT_AUTH_SECRET`` set every transport needs an HS256 JWT whose ``sub``
is the user's id and ``name`` their display name, with an ``exp``: the
Socket.IO connect ``auth`` (``{"token": ...}``), ``Authorization: Bearer`` on
the HTTP POST route, ``?token=`` on the ``/ws`` bridge. The id, not the name,
is the identity then, so two users may share a display name and stay apart.

A development token: ``python -m backend.auth mint alice [--sub ID] [--ttl SECONDS]``
(reads ``CHAT_AUTH_SECRET``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import jwt

from backend.chat import anonymous_user
from backend.config import Settings, get_settings
from backend.models import ChatError, ConnectAuth, UserName, parse
from backend.presence import User

ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
"""Clock skew tolerated between whoever mints tokens and the fleet."""
SUB_MAX = 128


def _unauthorized(detail: str) -> ChatError:
    return ChatError("unauthorized", detail, 401)


def user_from_token(secret: str, token: Any) -> User:
    """The user a signed token names, or ``ChatError('unauthorized')`` saying why not."""
    if not isinstance(token, str) or not token:
        raise _unauthorized("a signed token is required")
    if len(token) > 4096:
        raise _unauthorized("invalid token: too long")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp"]}, leeway=LEEWAY_SECONDS
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("token expired") from None
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None
    sub, name = claims.get("sub"), claims.get("name")
    if not isinstance(sub, str) or not 1 <= len(sub) <= SUB_MAX or not sub.isprintable():
        raise _unauthorized(f"invalid token: sub must be 1-{SUB_MAX} printable characters")
    try:
        creds = parse(ConnectAuth, {"name": name})
    except ChatError as exc:
        raise _unauthorized(f"invalid token: {exc.detail}") from None
    return {"id": sub, "name": creds.name}


def authenticate(settings: Settings, auth: Any) -> User:
    """The user behind a connect ``auth`` payload, or ``ChatError('unauthorized')``."""
    if auth is None:
        auth = {}
    if not isinstance(auth, dict):
        raise _unauthorized("invalid auth: auth must be a JSON object")
    if settings.auth_secret:
        return user_from_token(settings.auth_secret, auth.get("token"))
    try:
        creds = parse(ConnectAuth, auth)
    except ChatError as exc:
        raise _unauthorized(f"invalid auth: {exc.detail}") from None
    return anonymous_user(creds.name)


def bearer_user(settings: Settings, authorization: str | None) -> User | None:
    """The user of an ``Authorization: Bearer`` header when tokens are required,
    None when they are not (the caller then takes the name from the body)."""
    if not settings.auth_secret:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Authorization: Bearer <token> is required")
    return user_from_token(settings.auth_secret, token.strip())


def mint(secret: str, name: UserName, sub: str | None = None, ttl: float = 3600.0) -> str:
    """A signed token for ``name`` (id ``sub``, by default the name) valid ``ttl`` seconds."""
    now = int(time.time())
    claims = {"sub": sub or name, "name": name, "iat": now, "exp": now + int(ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.auth", description="Mint a development token.")
    sub_cmd = ap.add_subparsers(dest="command", required=True)
    m = sub_cmd.add_parser("mint", help="print a token for NAME signed with CHAT_AUTH_SECRET")
    m.add_argument("name")
    m.add_argument("--sub", help="user id (default: the name)")
    m.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid (default 3600)")
    args = ap.parse_args(argv)
    secret = get_settings().auth_secret
    if not secret:
        print("CHAT_AUTH_SECRET is not set: export it first (the same value the backend uses)", file=sys.stderr)
        return 2
    try:
        name = parse(ConnectAuth, {"name": args.name}).name
    except ChatError as exc:
        print(exc.detail, file=sys.stderr)
        return 2
    print(mint(secret, name, args.sub, args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
