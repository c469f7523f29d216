"""Helpers for the security suite: HTTP with headers, connect attempts that
return the refusal instead of raising, and the figures file for the README."""

from __future__ import annotations

import contextlib
import json
import os
import re
import urllib.request
from typing import Any

import socketio

from tests.support import ROOT, metric

SECRET = "test-secret-of-at-least-32-bytes-long!"
FIGURES = ROOT / "artifacts" / "security"


def request(
    url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request; returns status, headers (lower-case names) and the JSON body (or raw bytes)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    hdrs = {"content-type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw, got = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), exc.headers
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return status, {k.lower(): v for k, v in got.items()}, parsed


async def try_connect(url: str, auth: Any, headers: dict[str, str] | None = None, transport: str = "websocket") -> Any:
    """Connect a Socket.IO client: the connected client, or the ``connect_error``
    data the server refused it with (a dict), or the client-side error text."""
    refusal: list[Any] = []
    client = socketio.AsyncClient(reconnection=False)
    client.on("connect_error", lambda data=None: refusal.append(data))
    try:
        await client.connect(url, auth=auth, headers=headers or {}, transports=[transport], wait_timeout=5)
    except socketio.exceptions.ConnectionError as exc:
        with contextlib.suppress(Exception):  # the client's own cleanup after a refusal
            await client.disconnect()
        return refusal[0] if refusal and refusal[0] is not None else str(exc)
    return client


def record(name: str, figures: dict[str, Any]) -> None:
    """Keep what a test measured under artifacts/security/ (the README quotes it)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True))
    print(f"\n[{name}] {json.dumps(figures, sort_keys=True)}", flush=True)


def examples(default: int) -> int:
    """Cases per fuzzed surface: ``FUZZ_EXAMPLES`` scales the whole suite."""
    return int(os.environ.get("FUZZ_EXAMPLES", default))


def log_problems(log: str) -> list[str]:
    """Lines of a backend log that say something went wrong inside it."""
    bad = re.compile(r"Traceback|[Ee]xception|\bERROR\b|\bCRITICAL\b")
    return [line for line in log.splitlines() if bad.search(line)]


__all__ = ["FIGURES", "SECRET", "examples", "log_problems", "metric", "record", "request", "try_connect"]
