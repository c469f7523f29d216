"""The ``sid`` of a log line is bound by fleetchat's own handler wrapper
(``backend.logs.with_sid``), not by patching python-socketio's dispatch."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from backend import logs


async def test_a_wrapped_handler_logs_with_its_sid_and_leaves_none_behind() -> None:
    seen: list[Any] = []

    @logs.with_sid
    async def handle(sid: str, *args: Any) -> str:
        seen.append(logs.sid_var.get())
        return "done"

    assert await handle("abc", {"x": 1}) == "done"
    assert seen == ["abc"]
    assert logs.sid_var.get() is None


async def test_connect_is_logged_with_the_balancers_request_id(caplog: pytest.LogCaptureFixture) -> None:
    request_ids: list[Any] = []

    @logs.logged_connection
    async def connect(sid: str, environ: Any = None, auth: Any = None) -> None:
        request_ids.append((logs.sid_var.get(), logs.request_id_var.get()))

    with caplog.at_level(logging.INFO, logger="fleetchat.access"):
        await connect("s1", {"HTTP_X_REQUEST_ID": "req-1", "REMOTE_ADDR": "10.0.0.1"}, {"name": "ann"})
    assert request_ids == [("s1", "req-1")]
    [record] = [r for r in caplog.records if r.getMessage() == "socket connected"]
    assert (record.client, record.user) == ("10.0.0.1", "ann")  # type: ignore[attr-defined]
