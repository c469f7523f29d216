"""The baseline for the conformance suite: a plain ``engineio.AsyncServer`` as an ASGI
app (no fleetchat, no cuts), with the suite's ping settings and payload cap."""

from __future__ import annotations

from typing import Any

import engineio

server = engineio.AsyncServer(
    async_mode="asgi", ping_interval=0.3, ping_timeout=0.2, max_http_buffer_size=1_000_000, cors_allowed_origins="*"
)


async def _healthz(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/healthz`` for the test harness's start-up check; 404 for anything else."""
    if scope["type"] != "http":
        return
    ok = scope["path"] == "/healthz"
    await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": []})
    await send({"type": "http.response.body", "body": b"ok" if ok else b""})


app = engineio.ASGIApp(server, other_asgi_app=_healthz, engineio_path="socket.io")
