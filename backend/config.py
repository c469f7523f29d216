"""Configuration: the one place that reads the environment.

Every knob has a default that serves a laptop; a fleet sets ``REDIS_URL``
(and ``DATABASE_URL`` for the system of record).
"""

from __future__ import annotations

import socket
import uuid
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime settings, read from environment variables (names in the README)."""

    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("REDIS_URL", "CHAT_REDIS_URL"))
    db_path: str = "data/chat.db"
    database_url: str | None = Field(default=None, validation_alias=AliasChoices("DATABASE_URL", "CHAT_DATABASE_URL"))
    """The system of record (PostgreSQL, the PaaS convention); the worker archives into it (backend/archiver.py)."""
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """``CHAT_WORKER_METRICS_PORT``: where ``backend.worker`` serves ``/metrics`` (archive lag); unset: nowhere."""
    cors_origins: str = "http://localhost:3000,http://127.0.0.1:3000"
    auth_secret: str | None = None
    """Signs and checks tokens; without it one is generated and kept (backend/auth.py)."""
    guests: bool | None = None
    """Whether a connection without a token may chat under a name of its choice (``guests_allowed``)."""
    token_ttl_seconds: float = Field(default=30 * 86_400, gt=60, description="how long a sign-in lasts")
    login_failures_per_user: int = Field(default=10, ge=1, description="failed logins per username per window")
    login_failures_per_address: int = Field(default=20, ge=1, description="failed logins per address per window")
    login_window_seconds: float = Field(default=900, gt=0)
    max_message_chars: int = Field(default=4000, ge=1, le=100_000)
    max_payload_bytes: int = Field(default=1_048_576, ge=1024)
    """The packet cap: a bigger Socket.IO packet, ``/ws`` frame or HTTP body closes that connection
    (HTTP: 413). 1 MiB, like Socket.IO's own 1 MB, leaves room for a text of 1,000,000 characters
    and its envelope, so a long paste gets a ``too_large`` answer instead of a dropped socket."""
    rate: float = Field(default=10.0, gt=0, description="messages per second per connection")
    rate_burst: int = Field(default=20, ge=1)
    history_limit: int = Field(default=10_000, ge=10, description="most messages a resuming join is sent at once")
    redis_window: int = Field(default=10_000, ge=100, description="messages per room Redis keeps once archived")
    moderators: str = ""
    """Comma-separated usernames of accounts that moderate every room (may delete any message)."""
    default_room: str = "general"
    page_size: int = Field(default=50, ge=1, le=500)
    max_rooms_per_connection: int = Field(default=50, ge=1)
    max_connections: int = Field(default=20_000, ge=1, description="Socket.IO and /ws connections per instance")
    connects_per_minute: int = Field(default=600, ge=0, description="new connections per client address, 0: no limit")
    trusted_proxies: str = ""
    """Comma-separated peer addresses (the load balancer) whose X-Forwarded-For is believed."""
    dedupe_ttl_seconds: int = Field(default=86_400, ge=60)
    accel: Literal["on", "off"] = "on"
    """``CHAT_ACCEL``: ``off`` applies none of the fast path's cuts (backend/accel/), so the
    libraries run as they ship: slower and heavier per connection, same behaviour."""
    lean_websockets: bool = True
    """``CHAT_LEAN_WEBSOCKETS=false`` switches off one cut, ``lean_websocket``: Socket.IO websockets
    stay with hypercorn and engine.io's own handler (``CHAT_ACCEL=off`` implies it)."""
    ping_interval_seconds: float = Field(default=20.0, gt=0, le=300, description="Engine.IO ping every this often")
    ping_timeout_seconds: float = Field(default=20.0, gt=0, le=300, description="a client that misses its pong is gone")
    presence_ttl_seconds: float = Field(default=15.0, gt=1)
    room_channel_linger_seconds: float = Field(
        default=5.0, ge=0, description="a room's pub/sub channel stays this long after its last local listener left"
    )
    fanout_linger_ms: float = Field(default=5.0, ge=0, le=100)
    """``CHAT_FANOUT_LINGER_MS``: a busy instance writes its deliveries at most once per this many
    milliseconds, each socket's messages of that time in one write (``backend.fanout.Fanout``);
    an instance at rest writes at once. 0 writes every event-loop tick."""
    backend_url: str = "http://127.0.0.1:8000"
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    port: int = Field(default=8000, validation_alias=AliasChoices("PORT", "CHAT_PORT"))
    log_format: Literal["json", "text"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = "INFO"

    @property
    def cors_origin_list(self) -> list[str] | str:
        """python-socketio and Quart take a list of origins, or '*' for any."""
        raw = self.cors_origins.strip()
        if raw == "*":
            return "*"
        return [o.strip() for o in raw.split(",") if o.strip()]

    def origin_allowed(self, origin: str | None) -> bool:
        """A request without an Origin header (curl, a server-side client) is not
        a browser acting for another site, so only a present Origin is checked."""
        if origin is None:
            return True
        allowed = self.cors_origin_list
        return allowed == "*" or origin in allowed

    @property
    def guests_allowed(self) -> bool:
        """``CHAT_GUESTS`` when set; otherwise guests are welcome unless ``CHAT_AUTH_SECRET``
        is set (a deployment that set a secret meant every user to hold a token)."""
        return self.guests if self.guests is not None else not self.auth_secret

    @property
    def moderator_set(self) -> frozenset[str]:
        return frozenset(m.strip().casefold() for m in self.moderators.split(",") if m.strip())

    @property
    def trusted_proxy_set(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.trusted_proxies.split(",") if p.strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings are read once per process; tests build their own ``Settings``."""
    return Settings()
