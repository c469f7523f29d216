"""A flood does not hurt the others: one client at 10x its message rate (one
in ten over the text limit) while its second socket keeps sending frames over
the packet limit. Well-behaved senders and receivers lose nothing, are never
disconnected, and their delivery latency is measured with and without the
flood (reported, not asserted: timings depend on the machine)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import uuid
from typing import Any

import orjson
import pytest
import socketio

from tests.security.helpers import log_problems, metric, record
from tests.support import ROOT, http_get

RATE = 100  # per user per second (and the burst): the flooder sends 10x this
SENDERS, RECEIVERS, SENDER_RATE, PHASE_SECONDS = 3, 3, 10.0, 4.0


class Observer:
    """A well-behaved client: sends at SENDER_RATE (when a sender) and times
    every message it receives against the moment it was sent."""

    def __init__(self, url: str, name: str, sent_at: dict[str, float]) -> None:
        self.url, self.name, self.sent_at = url, name, sent_at
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[dict[str, Any]] = []
        self.latencies: dict[str, float] = {}
        self.disconnects = 0
        self.retries = 0
        self.sio.on("message", self._on_message)
        self.sio.on("disconnect", self._on_disconnect)

    def _on_message(self, message: dict[str, Any]) -> None:
        self.received.append(message)
        started = self.sent_at.get(message.get("client_id", ""))
        if started is not None:
            self.latencies[message["client_id"]] = time.monotonic() - started

    def _on_disconnect(self, *_: Any) -> None:
        self.disconnects += 1

    async def start(self, room: str) -> None:
        await self.sio.connect(self.url, auth={"name": self.name}, transports=["websocket"], wait_timeout=10)
        assert (await self.sio.call("join", {"room": room}, timeout=10))["ok"]

    async def send_for(self, room: str, phase: str, seconds: float, acks: list[dict[str, Any]]) -> None:
        n = int(seconds * SENDER_RATE)
        for i in range(n):
            cid = f"{phase}-{self.name}-{i}"
            self.sent_at[cid] = time.monotonic()
            payload = {"room": room, "text": cid, "client_id": cid}
            ack = await self.sio.call("message", payload, timeout=10)
            for _ in range(20):  # as the protocol asks: retry "unavailable" with the same client_id
                if ack.get("error") != "unavailable":
                    break
                self.retries += 1
                await asyncio.sleep(0.1)
                ack = await self.sio.call("message", payload, timeout=10)
            acks.append(ack)
            await asyncio.sleep(1 / SENDER_RATE)


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "count": len(ordered),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def run_phase(observers: list[Observer], room: str, phase: str) -> list[dict[str, Any]]:
    acks: list[dict[str, Any]] = []
    await asyncio.gather(*(o.send_for(room, phase, PHASE_SECONDS, acks) for o in observers[:SENDERS]))
    return acks


@pytest.mark.parametrize("mode", ["embedded", pytest.param("fleet", marks=pytest.mark.fleet)])
async def test_a_flood_neither_slows_nor_loses_the_others_messages(backends, redis_server, mode):
    env = {"CHAT_RATE": str(RATE), "CHAT_RATE_BURST": str(RATE)}
    if mode == "fleet":
        env["REDIS_URL"] = redis_server.url
        instances = [backends(env=env), backends(env=env)]
    else:
        instances = [backends(env=env)]
    target = instances[0]
    room = "flood-" + uuid.uuid4().hex[:10]
    sent_at: dict[str, float] = {}
    observers = [Observer(instances[i % len(instances)].url, f"obs{i}", sent_at) for i in range(SENDERS + RECEIVERS)]
    for o in observers:
        await o.start(room)
    try:
        baseline_acks = await run_phase(observers, room, "calm")
        flooder = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "tests.security.flooder", target.url, room, str(RATE * 10), str(PHASE_SECONDS + 1)],
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert flooder.stdout is not None
            assert (await asyncio.wait_for(flooder.stdout.readline(), 30)).strip() == b"ready"
            flood_acks = await run_phase(observers, room, "flood")
            out, _ = await asyncio.wait_for(flooder.communicate(), 60)
        finally:
            if flooder.returncode is None:
                flooder.kill()
                await flooder.wait()
        flood = orjson.loads(out.strip().splitlines()[-1])
        refused = [a for a in baseline_acks + flood_acks if not a.get("ok")]
        assert not refused, f"well-behaved senders were refused: {refused[:5]}"
        # Settle: every receiver has every accepted message of the others.
        expected = {a["id"] for a in baseline_acks + flood_acks}
        for _ in range(200):
            if all(expected <= {m["id"] for m in o.received} for o in observers):
                break
            await asyncio.sleep(0.05)
    finally:
        for o in observers:
            await o.sio.disconnect()

    assert all(a["ok"] for a in baseline_acks + flood_acks), [a for a in baseline_acks + flood_acks if not a["ok"]]
    for o in observers:
        assert o.disconnects == 1, f"{o.name} was disconnected during the test"  # only by our own disconnect()
        ids = [m["id"] for m in o.received]
        assert expected <= set(ids), f"{o.name} lost {len(expected - set(ids))} messages"
        twice = [m for m in o.received if ids.count(m["id"]) > 1]
        assert not twice, f"{o.name} got duplicates: {twice[:4]}"
        seqs = [m["seq"] for m in o.received]
        assert seqs == sorted(seqs), f"{o.name} got messages out of order"
        assert {m["user"]["name"] for m in o.received} <= {"flooder", *(x.name for x in observers)}

    # The flooder was held: refused over its rate, its oversized frames cost it the socket.
    seconds = PHASE_SECONDS + 1
    assert flood["refused_rate_limited"] > 0 and flood["refused_too_large"] > 0, flood
    assert flood["acked_ok"] <= RATE + RATE * (seconds + 2), flood
    assert flood.get("oversized_dropped", 0) >= 1 and flood.get("flood_disconnected", 0) <= 1, flood
    for backend in instances:
        assert not log_problems(backend.log()), log_problems(backend.log())[:5]
    metrics = http_get(target.url + "/metrics")[1].decode()
    assert metric(metrics, "fleetchat_refused_total", code="rate_limited") >= flood["refused_rate_limited"]

    calm = [o.latencies[a] for o in observers for a in o.latencies if a.startswith("calm-")]
    stormy = [o.latencies[a] for o in observers for a in o.latencies if a.startswith("flood-")]
    record(
        f"flood-{mode}",
        {
            "instances": len(instances),
            "rate_limit_per_user": RATE,
            "flooder": flood,
            "flooder_attempted_per_second": RATE * 10,
            "others": {"senders": SENDERS, "receivers": RECEIVERS, "msgs_per_sender_per_s": SENDER_RATE},
            "others_messages": len(expected),
            "others_lost": 0,
            "others_unavailable_retries": sum(o.retries for o in observers),
            "latency_without_flood": summary(calm),
            "latency_during_flood": summary(stormy),
        },
    )
