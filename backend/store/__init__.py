"""Message history: one contract, two implementations (SQLite and Redis)."""

from __future__ import annotations

from backend.config import Settings
from backend.store.base import AppendResult, MessageStore, RoomInfo, StoreUnavailable


def build_store(settings: Settings) -> MessageStore:
    """The Redis store when ``REDIS_URL`` is set, else the embedded SQLite store."""
    if settings.redis_url:
        from backend.store.redis import RedisStore

        return RedisStore(
            settings.redis_url,
            settings.dedupe_ttl_seconds,
            user_rate=(settings.rate, settings.rate_burst),
        )
    from backend.store.sqlite import SqliteStore

    return SqliteStore(settings.db_path)


__all__ = ["AppendResult", "MessageStore", "RoomInfo", "StoreUnavailable", "build_store"]
