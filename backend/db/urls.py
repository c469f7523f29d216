"""Database URLs as people write them, turned into the async driver URLs
SQLAlchemy needs. A PaaS add-on sets ``postgres://...`` (libpq's spelling),
which SQLAlchemy no longer accepts."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def driver_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` become ``postgresql+asyncpg://``
    (libpq's ``sslmode`` becomes asyncpg's ``ssl``); ``sqlite:///path`` becomes
    ``sqlite+aiosqlite:///path``. A URL that already names a driver is kept."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit("postgresql+asyncpg://" + rest)
        query = [("ssl" if k == "sslmode" else k, v) for k, v in parse_qsl(parts.query)]
        return urlunsplit(parts._replace(query=urlencode(query)))
    if scheme == "sqlite":
        return "sqlite+aiosqlite://" + rest
    return url


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")
