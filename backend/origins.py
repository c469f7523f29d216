"""The ``CHAT_CORS_ORIGINS`` allow-list for the HTTP API and the ``/ws`` bridge.

python-socketio enforces the same list for Socket.IO (``cors_allowed_origins``).
A request without an Origin header is no browser acting for another site
(curl, the Reflex backend, a bot) and passes; one with a disallowed Origin
gets no CORS headers, and may not change anything: a cross-origin POST or a
WebSocket upgrade from such a page is refused with 403 ``forbidden_origin``.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from backend.config import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOW_HEADERS = "content-type, authorization"
ALLOW_METHODS = "GET, POST, OPTIONS"


def forbidden(origin: str) -> tuple[dict[str, Any], int]:
    return {"ok": False, "error": "forbidden_origin", "detail": f"origin {origin[:100]!r} is not allowed"}, 403


def install(app: Quart, settings: Settings) -> None:
    @app.before_request
    async def check_origin() -> Any:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if not settings.origin_allowed(origin):
            if request.method not in SAFE_METHODS or "Access-Control-Request-Method" in request.headers:
                return forbidden(origin)
            return None
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            preflight = Response("", status=204)
            preflight.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            preflight.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            preflight.headers["Access-Control-Max-Age"] = "600"
            return preflight
        return None

    @app.after_request
    async def cors_headers(response: Response) -> Response:
        response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if origin is not None and settings.origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
        return response
