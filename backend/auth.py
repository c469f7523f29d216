"""Who a connection is: a signed-in account, or a guest where guests are allowed.

Every transport takes the same HS256 JWT: the Socket.IO connect ``auth``
(``{"token": ...}``), ``Authorization: Bearer`` on HTTP, ``?token=`` on the
``/ws`` bridge. Its ``sub`` is the user id, ``name`` the display name, and a
token from sign-in names its session in ``sid``: a session that ended (logout)
refuses the token everywhere. A token without ``sid`` is an operator's token,
minted with the secret itself (``python -m backend.auth mint NAME``, for bots
and tests); it lives until it expires, or until the secret changes.

The secret is ``CHAT_AUTH_SECRET``. Without it, one is generated once and
kept: in a file under ``data/`` in embedded mode, in Redis for a fleet (so
every instance signs and checks with the same one), and a restart signs
nobody out.

Guests (``CHAT_GUESTS``; by default allowed unless ``CHAT_AUTH_SECRET`` is
set) connect with a display name and no token, as before accounts existed.
A guest cannot use a registered username, and carries ``"guest": true``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from backend.accounts import Account, AccountStore, normalize_username
from backend.config import Settings, get_settings
from backend.models import ChatError, ConnectAuth, UserName, parse
from backend.presence import User
from backend.store.base import StoreUnavailable

ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
"""Clock skew tolerated between whoever mints tokens and the fleet."""
SUB_MAX = 128
SECRET_KEY = "fc:auth_secret"


def _unauthorized(detail: str) -> ChatError:
    return ChatError("unauthorized", detail, 401)


def guest_user(name: str) -> User:
    """A guest's name is its identity: two connections with the same name are the
    same guest (one person, two tabs)."""
    return {"id": "anon:" + name.casefold(), "name": name, "guest": True}  # type: ignore[dict-item]


def decode(secret: str, token: Any) -> dict[str, Any]:
    """The verified claims of a token, or ``ChatError('unauthorized')`` saying why not."""
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
        claims["name"] = parse(ConnectAuth, {"name": name}).name
    except ChatError as exc:
        raise _unauthorized(f"invalid token: {exc.detail}") from None
    if "sid" in claims and not isinstance(claims["sid"], str):
        raise _unauthorized("invalid token: sid must be a string")
    return claims


def mint(secret: str, name: UserName, sub: str | None = None, ttl: float = 3600.0, **claims: str) -> str:
    """A signed token for ``name`` (id ``sub``, by default the name) valid ``ttl`` seconds;
    sign-in adds ``sid`` (its session) and ``username``."""
    now = int(time.time())
    return jwt.encode(
        {"sub": sub or name, "name": name, "iat": now, "exp": now + int(ttl), **claims}, secret, algorithm=ALGORITHM
    )


async def load_secret(settings: Settings, redis: Any = None) -> str:
    """``CHAT_AUTH_SECRET``, or the one generated for this deployment (kept, so restarts sign nobody out)."""
    if settings.auth_secret:
        return settings.auth_secret
    fresh = secrets.token_urlsafe(48)
    if redis is not None:
        await redis.set(SECRET_KEY, fresh, nx=True)
        return (await redis.get(SECRET_KEY)).decode()
    return _file_secret(settings.db_path, fresh)


def _file_secret(db_path: str, fresh: str) -> str:
    """The secret kept beside the database (only its owner may read it), written once."""
    if db_path == ":memory:":
        return fresh  # nothing outlives this process anyway
    path = Path(db_path).resolve().parent / "auth_secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(fresh + "\n")
    return fresh


class Identity:
    """Tokens and guests, for one instance: who each connection and request is."""

    def __init__(self, settings: Settings, accounts: AccountStore, redis: Any = None) -> None:
        self.settings = settings
        self.accounts = accounts
        self.guests = settings.guests_allowed
        self._redis = redis
        self._secret: str | None = settings.auth_secret

    async def secret(self) -> str:
        """The signing secret (loaded at the first need: Redis may be down at start)."""
        if self._secret is None:
            try:
                self._secret = await load_secret(self.settings, self._redis)
            except Exception as exc:
                raise StoreUnavailable(f"the signing secret is unreachable: {exc}") from exc
        return self._secret

    async def issue(self, account: Account, session: str) -> str:
        ttl = self.settings.token_ttl_seconds
        return mint(await self.secret(), account.name, account.id, ttl, sid=session, username=account.username)

    async def from_token(self, token: Any) -> tuple[User, str | None]:
        """The user a token names and its session, if it still stands."""
        claims = decode(await self.secret(), token)
        user: User = {"id": claims["sub"], "name": claims["name"]}
        session = claims.get("sid")
        if session is not None:
            account_id = await self.accounts.session_account(session)
            if account_id != claims["sub"]:
                raise _unauthorized("signed out: this token's session has ended")
            if isinstance(claims.get("username"), str):
                user["username"] = claims["username"]
        return user, session

    async def guest(self, name: Any) -> User:
        if not self.guests:
            raise _unauthorized("sign in first: this server does not admit guests")
        try:
            creds = parse(ConnectAuth, {"name": name})
        except ChatError as exc:
            raise _unauthorized(f"invalid auth: {exc.detail}") from None
        try:
            username = normalize_username(creds.name)
        except ChatError:
            username = None  # not a possible username, so nobody has it
        if username is not None and await self.accounts.by_username(username) is not None:
            raise ChatError("name_taken", f"{creds.name!r} is a registered username: sign in, or pick another", 409)
        return guest_user(creds.name)

    async def connect(self, auth: Any) -> tuple[User, str | None]:
        """The user behind a connect ``auth`` payload (a token, or a guest's name)."""
        if auth is None:
            auth = {}
        if not isinstance(auth, dict):
            raise _unauthorized("invalid auth: auth must be a JSON object")
        if auth.get("token") is not None or not self.guests:
            return await self.from_token(auth.get("token"))
        return await self.guest(auth.get("name")), None

    async def bearer(self, authorization: str | None) -> tuple[User, str | None] | None:
        """The user of an ``Authorization: Bearer`` header; None when there is none
        and guests are allowed (the caller then takes a guest's name)."""
        if not authorization and self.guests:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("Authorization: Bearer <token> is required")
        return await self.from_token(token.strip())


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
