"""Each cut of the fast path (backend/accel/) applies on the pinned versions, and
each test here fails when its cut stops applying: the gate no longer matches the
installed library, or the cut no longer reaches the object it changes. The
gate's refusal leaves the library as it ships, with one WARNING naming the cut."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engineio
import pytest
from engineio.async_drivers import asgi as eio_asgi
from engineio.async_socket import AsyncSocket
from wsproto.extensions import PerMessageDeflate

from backend import accel
from backend.accel import (
    base,
    decline_deflate,
    direct_transport,
    idle_memory,
    idle_memory_hypercorn,
    lean_rooms,
    lean_websocket,
    quiet_gc,
)
from backend.app import create_app
from backend.config import Settings
from backend.jsonio import OrjsonModule


def _build(tmp_path: Path, **settings: Any) -> Any:
    """The engine.io server of an app built by ``create_app`` (the composition root)."""
    asgi, _, _ = create_app(Settings(db_path=str(tmp_path / "chat.db"), **settings))
    return asgi.engineio_server.eio


@pytest.fixture
def eio(tmp_path: Path) -> Iterator[Any]:
    yield _build(tmp_path)
    accel.configure()


@pytest.fixture(autouse=True)
def _cuts_back_on() -> Iterator[None]:
    yield
    accel.configure()


@pytest.mark.parametrize("cut", accel.CUTS, ids=lambda cut: cut.name)
def test_each_cut_is_gated_on_the_installed_version_and_applies_in_create_app(cut: base.Cut, eio: Any) -> None:
    assert cut.refusal() is None, cut.refusal()
    assert cut.applied, cut.reason
    for dist in cut.requires:
        assert base.installed_version(dist) == cut.requires[dist]


def test_decline_deflate_refuses_every_offer(eio: Any) -> None:
    from hypercorn.protocol import ws_stream

    assert ws_stream.PerMessageDeflate is decline_deflate.DeclinedPerMessageDeflate
    assert ws_stream.PerMessageDeflate().accept("permessage-deflate; client_max_window_bits") is None


async def test_idle_memory_gives_lean_queues_no_body_and_timer_pings(eio: Any) -> None:
    queue = eio.create_queue()
    assert isinstance(queue._getters, idle_memory.WaitList)
    assert isinstance(queue._putters, idle_memory.WaitList)
    assert eio._async["translate_request"] is not eio_asgi._async["translate_request"]
    assert issubclass(eio.socket_class, idle_memory.SocketMixin)
    assert eio.socket_class.poll is idle_memory.SocketMixin.poll
    # behaviour: the queue still hands items over, and the timer ping schedules no task
    sock = eio.socket_class(eio, "sid-1")
    queue.put_nowait("x")
    assert await queue.get() == "x"
    sock.last_ping = 1.0
    tasks = len(asyncio.all_tasks())
    sock.schedule_ping()
    assert len(asyncio.all_tasks()) == tasks


def test_idle_memory_hypercorn_replaces_spawn_app_and_event_class(eio: Any) -> None:
    from hypercorn.asyncio.task_group import TaskGroup
    from hypercorn.asyncio.worker_context import EventWrapper, WorkerContext

    assert TaskGroup.spawn_app is idle_memory_hypercorn._spawn_app
    assert WorkerContext.event_class is not EventWrapper and issubclass(WorkerContext.event_class, EventWrapper)
    assert isinstance(WorkerContext.event_class()._event._waiters, idle_memory.WaitList)


def test_lean_websocket_handler_and_environ_keeping_driver(eio: Any) -> None:
    assert issubclass(eio.socket_class, lean_websocket.SocketMixin)
    assert issubclass(eio._async["websocket"], lean_websocket.EnvironKeepingWebSocket)
    assert not issubclass(eio_asgi._async["websocket"], lean_websocket.EnvironKeepingWebSocket)  # scoped


def test_direct_transport_records_the_transport_outermost(eio: Any) -> None:
    assert eio.socket_class.__mro__[1] is direct_transport.SocketMixin
    sock = eio.socket_class(eio, "sid-2")
    assert direct_transport.transport_of(sock) is None  # not a websocket yet: engine.io's queue


async def test_lean_rooms_keeps_rooms_as_plain_dicts_and_none_as_a_bidict(tmp_path: Path) -> None:
    from bidict import bidict

    asgi, _, _ = create_app(Settings(db_path=str(tmp_path / "chat.db")))
    manager = asgi.engineio_server.manager
    assert isinstance(manager.rooms, lean_rooms.RoomTable)  # fleetchat's manager's table, no method replaced
    assert "basic_enter_room" not in vars(manager)
    sid = await manager.connect("eio-1", "/")
    await manager.enter_room(sid, "/", "general")
    rooms = manager.rooms["/"]
    assert type(rooms[None]) is bidict
    assert type(rooms[sid]) is lean_rooms.Room and type(rooms["general"]) is lean_rooms.Room
    # what python-socketio reads of them still answers
    assert list(manager.get_participants("/", "general")) == [(sid, "eio-1")]
    assert list(manager.get_participants("/", ["general", sid])) == [(sid, "eio-1")]
    assert manager.sid_from_eio_sid("eio-1", "/") == sid and manager.get_rooms(sid, "/") == [sid, "general"]
    with pytest.raises(ValueError, match="sid room"):
        manager.basic_enter_room("other", "/", sid)
    manager.basic_disconnect(sid, "/")
    assert "/" not in manager.rooms


def test_lean_rooms_off_leaves_the_managers_rooms_as_bidicts(tmp_path: Path) -> None:
    asgi, _, _ = create_app(Settings(db_path=str(tmp_path / "chat.db"), accel="off"))
    assert type(asgi.engineio_server.manager.rooms) is dict


async def test_lean_rooms_keeps_a_manager_subclasss_own_enter_room() -> None:
    import socketio

    entered: list[Any] = []

    class Tracking(socketio.AsyncManager):
        def basic_enter_room(self, sid, namespace, room, eio_sid=None):  # type: ignore[no-untyped-def]
            entered.append(room)
            super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)

    accel.configure()
    server = accel.ChatServer(async_mode="asgi", client_manager=Tracking())
    manager = server.manager
    sid = await manager.connect("eio-2", "/")
    await manager.enter_room(sid, "/", "general")
    assert entered == [None, sid, "general"]
    assert type(manager.rooms["/"]["general"]) is lean_rooms.Room


def test_quiet_gc_raises_the_young_threshold_once_serving(eio: Any) -> None:
    before = gc.get_threshold()
    try:
        quiet_gc.settle()
        assert gc.get_threshold()[0] == quiet_gc.YOUNG_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_sockets_registered_by_engineio_take_fleetchats_socket_class(eio: Any) -> None:
    plain = AsyncSocket(eio, "sid-3")
    eio.sockets["sid-3"] = plain
    assert type(eio.sockets["sid-3"]) is eio.socket_class


def test_the_servers_json_module_stays_on_its_own_packet_class(eio: Any) -> None:
    import socketio

    assert socketio.packet.Packet.json is not OrjsonModule  # other clients and servers keep the stdlib's


def test_a_refused_gate_warns_once_per_cut_and_leaves_the_libraries_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hypercorn.asyncio.task_group import TaskGroup
    from hypercorn.protocol import ws_stream

    accel.configure(enabled=False)
    original_spawn = TaskGroup.__dict__["spawn_app"]
    monkeypatch.setattr(base, "installed_version", lambda dist: "0.0.1")
    with caplog.at_level(logging.WARNING, logger="fleetchat.accel"):
        eio = _build(tmp_path)
        _build(tmp_path)  # again: no second warning
    assert not any(cut.applied for cut in accel.CUTS)
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refused) == len(accel.CUTS), refused
    for cut in accel.CUTS:
        assert any(cut.name in line and "0.0.1" in line for line in refused), cut.name
    assert ws_stream.PerMessageDeflate is PerMessageDeflate
    assert TaskGroup.__dict__["spawn_app"] is original_spawn
    assert type(eio) is engineio.AsyncServer and type(eio.sockets) is dict


def test_chat_accel_off_applies_none_and_builds_stock_servers(tmp_path: Path) -> None:
    from hypercorn.protocol import ws_stream

    eio = _build(tmp_path, accel="off")
    assert not any(cut.applied for cut in accel.CUTS)
    assert all(d["why"] == "off: CHAT_ACCEL=off" for d in accel.details())
    assert type(eio) is engineio.AsyncServer
    assert eio._async is eio_asgi._async
    assert ws_stream.PerMessageDeflate is PerMessageDeflate


def test_lean_websockets_false_runs_engineios_own_handler(tmp_path: Path) -> None:
    eio = _build(tmp_path, lean_websockets=False)
    assert not lean_websocket.CUT.applied
    assert "CHAT_LEAN_WEBSOCKETS=false" in lean_websocket.CUT.reason
    assert eio.socket_class._websocket_handler is direct_transport.SocketMixin._websocket_handler
    assert eio.socket_class.__mro__[1:3] == (direct_transport.SocketMixin, idle_memory.SocketMixin)
    assert not issubclass(eio.socket_class, lean_websocket.SocketMixin)  # upstream's handler under it
