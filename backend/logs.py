"""Logging: one JSON object per line in production, plain text on a laptop.

Every record says where it came from: ``sid`` for anything logged while a
Socket.IO event is handled, ``request_id`` for anything logged while an HTTP
request is served (taken from ``X-Request-ID`` when a load balancer sets it,
so a line can be matched with the balancer's own log). Both live in context
variables, so handlers need not pass them around.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

sid_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("fleetchat_sid", default=None)
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("fleetchat_request_id", default=None)

log = logging.getLogger("fleetchat.access")

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "sid"?, "request_id"?, ...extra, "exc"?}``"""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        sid = sid_var.get()
        if sid is not None:
            entry["sid"] = sid
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """The stdlib's plain format, with the sid or request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        sid, request_id = sid_var.get(), request_id_var.get()
        tag = " ".join(f"{k}={v}" for k, v in (("sid", sid), ("req", request_id)) if v)
        return f"{line} [{tag}]" if tag else line


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Route every logger (ours, hypercorn's, python-socketio's) through one stderr handler."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # python-socketio and python-engineio attach a handler of their own unless their logger
    # already has a level; with one set here, their records reach the handler above only.
    for name in ("socketio.server", "engineio.server", "socketio.client", "engineio.client"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # hypercorn installs its own handlers before it imports the app: give them our format too.
    for name in ("hypercorn.error", "hypercorn.access"):
        for existing in logging.getLogger(name).handlers:
            existing.setFormatter(formatter)


def with_sid(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``handler(sid, *args)``, a Socket.IO handler, with ``sid_var`` bound while it runs,
    so every record it logs carries the sid (set here, by fleetchat's own wrapper, rather
    than in python-socketio's dispatch)."""

    @functools.wraps(handler)
    async def bound(sid: Any, *args: Any) -> Any:
        token = sid_var.set(sid if isinstance(sid, str) else None)
        try:
            return await handler(sid, *args)
        finally:
            sid_var.reset(token)

    return bound


def logged_connection(connect: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The ``connect`` handler, logging the connection's start or refusal with the
    balancer's request id; the sid is bound as for every handler."""

    @with_sid
    @functools.wraps(connect)
    async def logged(sid: Any, *args: Any) -> Any:
        if not args or not isinstance(args[0], dict):
            return await connect(sid, *args)
        environ: dict[str, Any] = args[0]
        auth = args[1] if len(args) > 1 and isinstance(args[1], dict) else {}
        fields = {
            "client": environ.get("HTTP_X_FORWARDED_FOR") or environ.get("REMOTE_ADDR"),
            "user": str(auth.get("name", ""))[:64],
        }
        token = request_id_var.set(environ.get("HTTP_X_REQUEST_ID") or None)
        try:
            try:
                result = await connect(sid, *args)
            except Exception as exc:
                log.info("socket refused: %s", exc, extra=fields)
                raise
            if result is False:
                log.info("socket refused", extra=fields)
            else:
                log.info("socket connected", extra=fields)
            return result
        finally:
            request_id_var.reset(token)

    return logged


def install_http(app: Any) -> None:
    """A request id for every HTTP request (the balancer's, or a new one), echoed
    in ``X-Request-ID`` and logged with the request's outcome."""
    from quart import g, request

    @app.before_request
    async def bind_request_id() -> None:
        g.fleetchat_started = time.perf_counter()
        # Each request runs in its own task, hence its own copy of the context: no reset needed.
        request_id_var.set(request.headers.get("X-Request-ID") or uuid.uuid4().hex)

    @app.after_request
    async def log_request(response: Any) -> Any:
        request_id = request_id_var.get()
        if request_id is not None:
            response.headers["X-Request-ID"] = request_id
        started = getattr(g, "fleetchat_started", None)
        level = logging.DEBUG if request.path in _QUIET_PATHS and response.status_code < 400 else logging.INFO
        log.log(
            level,
            "%s %s %d",
            request.method,
            request.path,
            response.status_code,
            extra={
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 2) if started is not None else None,
                "client": request.headers.get("X-Forwarded-For") or request.remote_addr,
            },
        )
        return response
