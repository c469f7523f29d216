"""Message history: one contract, two implementations (SQLite and Redis)."""

from __future__ import annotations

import logging

from backend.config import Settings
from backend.store.base import AppendResult, MessageStore, RoomInfo, StoreUnavailable

log = logging.getLogger(__name__)


def build_store(settings: Settings) -> MessageStore:
    """The Redis store when ``REDIS_URL`` is set (over the PostgreSQL system of record
    when ``DATABASE_URL`` is set too), else the embedded SQLite store."""
    if settings.redis_url:
        from backend.db.archive import Archive
        from backend.store.redis import RedisStore

        return RedisStore(
            settings.redis_url,
            settings.dedupe_ttl_seconds,
            user_rate=(settings.rate, settings.rate_burst),
            archive=Archive(settings.database_url) if settings.database_url else None,
            window=settings.redis_window,
        )
    if settings.database_url:
        log.warning("DATABASE_URL is used with REDIS_URL (a fleet); without it history stays in %s", settings.db_path)
    from backend.store.sqlite import SqliteStore

    return SqliteStore(settings.db_path)


__all__ = ["AppendResult", "MessageStore", "RoomInfo", "StoreUnavailable", "build_store"]
