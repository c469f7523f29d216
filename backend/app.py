"""Composition only: builds the ASGI app that ``hypercorn backend.app:asgi`` serves.

One python-socketio server and one Quart app in one ASGI app. Without
``REDIS_URL`` everything lives in this process (SQLite history, in-memory
presence and broadcast); with it, python-socketio's Redis manager carries the
broadcast across the fleet and history and presence live in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from quart import Quart
from quart_schema import Info, QuartSchema

from backend import accel, http, logs
from backend.accounts import build_accounts
from backend.archiver import archive_lag, ensure_archive_group, lag_gauge
from backend.auth import Identity
from backend.bridge import bridge
from backend.chat import Chat, run_periodically
from backend.config import Settings, get_settings
from backend.events import register
from backend.fanout import SHARED_CHANNEL, FleetManager, LocalManager
from backend.jsonio import OrjsonModule
from backend.metrics import Metrics
from backend.notifier import LocalNotifier
from backend.presence import MemoryPresence, Presence, RedisPresence
from backend.shutdown import Drain
from backend.store import build_store
from backend.store.redis import RedisStore, ensure_mention_group

log = logging.getLogger("fleetchat")

# socket_timeout=None: the pub/sub connection legitimately sits idle between messages, and
# redis-py 8 defaults to 5 s (a listener that times out resubscribes and loses the gap).
# protocol=2: the replies redis-py 7 gave (redis-py 8 speaks RESP3 unless told).
REDIS_MANAGER_OPTIONS = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": None,
    "health_check_interval": 10,
    "protocol": 2,
}


def create_app(settings: Settings | None = None) -> tuple[Any, Quart, Chat]:
    """The ASGI app, the Quart app and the chat service, wired for ``settings``."""
    settings = settings or get_settings()
    # The fast path's cuts apply here, before the servers they shape are built.
    switched_off = {} if settings.lean_websockets else {"lean_websocket": "CHAT_LEAN_WEBSOCKETS=false"}
    accel.configure(settings.accel == "on", switched_off)
    metrics = Metrics()
    store = build_store(settings)
    accounts = build_accounts(settings)
    fleet = settings.redis_url is not None
    manager: LocalManager | FleetManager = (
        FleetManager(
            settings.redis_url,
            channel=SHARED_CHANNEL,
            redis_options=REDIS_MANAGER_OPTIONS,
            linger=settings.room_channel_linger_seconds,
        )
        if fleet
        else LocalManager()
    )
    sio = accel.ChatServer(
        engineio_server=accel.engineio_server_class(),
        async_mode="asgi",
        client_manager=manager,
        json=OrjsonModule,
        cors_allowed_origins=settings.cors_origin_list,
        max_http_buffer_size=settings.max_payload_bytes,
        ping_interval=settings.ping_interval_seconds,
        ping_timeout=settings.ping_timeout_seconds,
    )
    # Presence needs the store's Redis client, which exists only once opened.
    presence_holder: list[Presence] = [MemoryPresence()]
    chat = Chat(settings, store, presence_holder[0], sio, metrics)
    manager.relay = chat.relay
    manager.updates = chat.updates
    manager.fanout = chat.fanout
    if isinstance(manager, FleetManager) and isinstance(store, RedisStore):
        store.announce_on(manager.room_channel, manager.host_id)
    if isinstance(manager, FleetManager):
        manager.on_resubscribe = _count_resubscribes(metrics, chat.sweep_soon)
        manager.on_received = metrics.pubsub_received.inc
        manager.on_arrival = _observe_lag(metrics)
        metrics.room_channels.set_function(manager.routes.count)
        manager.on_revoke = chat.end_session_here
        manager.on_epoch = chat.apply_epoch
        manager.on_evict = chat.evict_here
    if isinstance(store, RedisStore):
        store.on_epoch = chat.apply_epoch
    register(sio, chat)

    app = Quart("fleetchat")
    # exclude_none: a user object carries "guest" or "username" only when it has one.
    QuartSchema(
        app,
        info=Info(title="fleetchat", version="1"),
        openapi_path="/openapi.json",
        pydantic_dump_options={"exclude_none": True},
    )
    http.install(app, chat)
    logs.install_http(app)
    app.register_blueprint(bridge)
    tasks: list[asyncio.Task[None]] = []
    notifier = LocalNotifier(chat) if not fleet else None

    drain = Drain(sio)
    app.extensions["fleetchat_drain"] = drain

    @app.before_serving
    async def start() -> None:
        drain.install()
        await store.open()
        await accounts.open()
        chat.identity = Identity(settings, accounts, getattr(store, "redis", None))
        await _tolerate(chat.identity.secret())
        await _tolerate(store.room_info(settings.default_room))
        if fleet:
            assert isinstance(store, RedisStore) and store.redis is not None
            chat.presence = RedisPresence(store.redis, settings.instance_id, settings.presence_ttl_seconds)
            app.extensions["fleetchat_bus_ping"] = _bus_ping(manager, metrics)
            # python-socketio starts the pub/sub listener at the first connection; start it now,
            # so /readyz (which pings its Redis) turns ready before any client arrives.
            if not sio.manager_initialized:
                sio.manager_initialized = True
                manager.initialize()
            await _tolerate(chat.presence.heartbeat())
            await _tolerate(ensure_mention_group(store.redis))
            if store.archive is not None:
                await _tolerate(ensure_archive_group(store.redis))
                gauge = lag_gauge(metrics.registry)
                lag = _count_errors(metrics, "archive_lag", _measure_lag(store.redis, gauge))
                tasks.append(asyncio.create_task(run_periodically(5.0, lag, "archive lag")))
            interval = settings.presence_ttl_seconds / 3
            heartbeat = _count_errors(metrics, "heartbeat", chat.heartbeat)
            tasks.append(asyncio.create_task(run_periodically(interval, heartbeat, "presence heartbeat")))
            reaper = _count_errors(metrics, "reaper", chat.reap_presence)
            tasks.append(asyncio.create_task(run_periodically(interval, reaper, "presence reaper")))
        sweep = _count_errors(metrics, "relay_sweep", chat.sweep) if fleet else chat.sweep
        tasks.append(asyncio.create_task(run_periodically(1.0, sweep, "relay sweep")))
        if notifier is not None:
            chat.notify_local = notifier.submit
            tasks.append(asyncio.create_task(notifier.run()))
        accel.settle()
        log.info("fleetchat instance %s ready (%s mode)", settings.instance_id, "fleet" if fleet else "embedded")

    @app.after_serving
    async def stop() -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await _tolerate(chat.presence.drop_instance())
        await store.close()
        await accounts.close()

    asgi = socketio.ASGIApp(sio, other_asgi_app=app, socketio_path="socket.io")
    return asgi, app, chat


def _measure_lag(redis: Any, gauge: Any) -> Callable[[], Awaitable[None]]:
    """``fleetchat_archive_lag`` on every instance's ``/metrics``: events not yet in PostgreSQL."""

    async def measure() -> None:
        lag = await archive_lag(redis)
        gauge.set(lag or 0)

    return measure


def _bus_ping(manager: Any, metrics: Metrics) -> Any:
    async def ping() -> bool:
        try:
            return await manager.ping()
        except Exception:
            metrics.redis_errors.labels("readyz").inc()
            return False

    return ping


def _count_errors(metrics: Metrics, source: str, fn: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    """``fn`` with its failures counted in ``fleetchat_redis_errors_total{source}``."""
    errors = metrics.redis_errors.labels(source)

    async def counted() -> Any:
        try:
            return await fn()
        except Exception:
            errors.inc()
            raise

    return counted


def _observe_lag(metrics: Metrics) -> Callable[[dict[str, Any]], None]:
    """How long a message took from its sending instance (its ``ts``) to this one's listener."""
    observe = metrics.pubsub_lag.observe

    def arrived(message: dict[str, Any]) -> None:
        ts = message.get("ts")
        if isinstance(ts, int):
            observe(max(0.0, time.time() - ts / 1000))

    return arrived


def _count_resubscribes(metrics: Metrics, then: Callable[[], None]) -> Callable[[], None]:
    """The listener's first subscription is not a reconnect; every later one is."""
    subscribed = False

    def on_subscribe() -> None:
        nonlocal subscribed
        if subscribed:
            metrics.pubsub_reconnects.inc()
        subscribed = True
        then()

    return on_subscribe


async def _tolerate(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.warning("ignored during start/stop: %s", exc)


logs.configure(get_settings().log_format, get_settings().log_level)
asgi, app, chat = create_app()
