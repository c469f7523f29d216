"""The local fleet behind nginx: chat through the load balancer, lose an instance
to SIGKILL, restart every instance in turn, and lose no acknowledged message."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
import uuid
from typing import Any

import pytest

from tests.deploy.conftest import LocalFleet, ResumingClient
from tests.support import ROOT, async_wait_for, http_get

pytestmark = [pytest.mark.fleet, pytest.mark.xdist_group("deploy")]

CLIENTS = 6
ARTIFACTS = ROOT / "artifacts" / "deploy"


def room() -> str:
    return "lb-" + uuid.uuid4().hex[:12]


async def connect_all(fleet: LocalFleet, r: str) -> list[ResumingClient]:
    return [await ResumingClient(fleet.lb_url, f"user{i}", r).connect() for i in range(CLIENTS)]


async def chatter(client: ResumingClient, acked: list[dict[str, Any]], stop: asyncio.Event, pause: float) -> None:
    """Send until ``stop``; every message is retried with its client_id until acknowledged."""
    for i in range(100_000):
        if stop.is_set():
            return
        acked.append(await client.send(f"{client.name}-{i}"))
        await asyncio.sleep(pause)


async def converge(clients: list[ResumingClient], acked: list[dict[str, Any]]) -> None:
    """Wait until every client is joined and holds every acknowledged message."""
    wanted = {a["seq"] for a in acked}

    def done() -> bool:
        return all(c.joined.is_set() and wanted <= c.received.keys() for c in clients)

    try:
        await async_wait_for(done, timeout=45, what="every client to hold every acknowledged message")
    except TimeoutError:
        missing = {c.name: sorted(wanted - c.received.keys())[:10] for c in clients}
        raise AssertionError(f"messages missing after convergence window: {missing}") from None


def check_nothing_lost(clients: list[ResumingClient], acked: list[dict[str, Any]]) -> None:
    by_seq = {a["seq"]: a for a in acked}
    assert len(by_seq) == len(acked), "two acknowledged sends got the same seq"
    top = max(by_seq)
    for client in clients:
        assert not client.duplicates, f"{client.name} received messages twice: {client.duplicates}"
        for seq, ack in by_seq.items():
            got = client.received[seq]
            assert (got["id"], got["text"]) == (ack["id"], ack["text"]), (client.name, got, ack)
        # The room's seq has no gaps: nothing was stored that any client missed.
        assert set(range(client.first_seq or 1, top + 1)) <= client.received.keys()


def record(name: str, figures: dict[str, Any]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(figures, indent=2))
    print(f"\n{name}: {json.dumps(figures)}")


async def test_sigkill_one_instance_behind_nginx_loses_nothing(local_fleet: LocalFleet):
    fleet = local_fleet
    await async_wait_for(fleet.all_web_ready, timeout=60, what="all instances ready")
    r = room()
    clients = await connect_all(fleet, r)
    acked: list[dict[str, Any]] = []
    try:
        # Round robin without stickiness spreads the websockets over the instances.
        web = fleet.web()
        counts = {name: fleet.connected(p["port"]) for name, p in web.items()}
        assert sum(counts.values()) >= CLIENTS
        assert sum(1 for n in counts.values() if n > 0) >= 2, counts

        for client in clients:
            acked.append(await client.send(f"{client.name}-hello"))
        # The mention worker runs in the fleet: a mention reaches the named user.
        mention = await clients[0].send(f"hello @{clients[1].name}")
        acked.append(mention)
        await async_wait_for(
            lambda: any(n["message"]["id"] == mention["id"] for n in clients[1].notifications),
            what="the worker's mention notification",
        )
        await converge(clients, acked)

        stop = asyncio.Event()
        senders = [asyncio.create_task(chatter(c, acked, stop, 0.02)) for c in clients]
        before = len(acked)
        await async_wait_for(lambda: len(acked) >= before + 30, what="traffic before the kill")
        victim = max(counts, key=lambda n: counts[n])
        os.kill(web[victim]["pid"], signal.SIGKILL)
        # Its clients come back through nginx (on the survivors, or on the restarted instance).
        await async_wait_for(
            lambda: sum(len(c.outages) for c in clients) >= counts[victim] and all(c.joined.is_set() for c in clients),
            timeout=45,
            what="the killed instance's clients to rejoin through nginx",
        )
        at_rejoin = len(acked)
        await async_wait_for(lambda: len(acked) >= at_rejoin + 30, what="traffic after the kill")
        stop.set()
        await asyncio.gather(*senders)
        await converge(clients, acked)
        check_nothing_lost(clients, acked)

        # The same history over plain HTTP through the load balancer.
        status, body = http_get(f"{fleet.lb_url}/api/rooms/{r}/messages?limit=500")
        assert status == 200
        stored = {m["seq"]: m["id"] for m in json.loads(body)["messages"]}
        assert max(stored) == max(a["seq"] for a in acked)
        assert {a["seq"]: a["id"] for a in acked if a["seq"] >= min(stored)}.items() <= stored.items()
        outages = [o for c in clients for o in c.outages]
        record(
            "sigkill",
            {
                "clients": CLIENTS,
                "killed": victim,
                "sockets_on_killed_instance": counts[victim],
                "acknowledged": len(acked),
                "lost": 0,
                "reconnects": len(outages),
                "max_reconnect_s": round(max(outages), 3),
            },
        )
    finally:
        for client in clients:
            await client.close()


async def test_rolling_restart_under_traffic_loses_nothing(local_fleet: LocalFleet):
    fleet = local_fleet
    await async_wait_for(fleet.all_web_ready, timeout=60, what="all instances ready")
    pids_before = {n: p["pid"] for n, p in fleet.web().items()}
    r = room()
    clients = await connect_all(fleet, r)
    acked: list[dict[str, Any]] = []
    try:
        stop = asyncio.Event()
        senders = [asyncio.create_task(chatter(c, acked, stop, 0.05)) for c in clients]
        await async_wait_for(lambda: len(acked) >= 30, what="traffic before the restart")
        started = time.monotonic()
        script = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "rolling_restart.sh"),
            "--state-dir",
            str(fleet.dir),
            "--pause",
            "0.5",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(script.communicate(), 180)
        restart_s = time.monotonic() - started
        assert script.returncode == 0, out.decode()
        after_restart = len(acked)
        await async_wait_for(lambda: len(acked) >= after_restart + 30, what="traffic after the restart")
        stop.set()
        await asyncio.gather(*senders)
        await converge(clients, acked)
        check_nothing_lost(clients, acked)

        pids_after = {n: p["pid"] for n, p in fleet.web().items()}
        assert all(pids_after[n] != pids_before[n] for n in pids_before), (pids_before, pids_after)
        # Every instance went down once with clients on it: each client reconnected at least once.
        assert all(c.outages for c in clients), [c.outages for c in clients]
        outages = [o for c in clients for o in c.outages]
        record(
            "rolling_restart",
            {
                "clients": CLIENTS,
                "instances": len(pids_before),
                "acknowledged": len(acked),
                "lost": 0,
                "duplicates": 0,
                "reconnects": len(outages),
                "max_reconnect_s": round(max(outages), 3),
                "median_reconnect_s": round(sorted(outages)[len(outages) // 2], 3),
                "rolling_restart_s": round(restart_s, 1),
                "script_output": out.decode().strip().splitlines(),
            },
        )
    finally:
        for client in clients:
            await client.close()


async def test_an_instance_that_stops_answering_readyz_is_taken_out_of_nginx(local_fleet: LocalFleet):
    """A hung instance still accepts TCP connections (the kernel does), so nginx's
    passive checks would not notice it; the supervisor's /readyz check does."""
    fleet = local_fleet
    await async_wait_for(fleet.all_web_ready, timeout=60, what="all instances ready")
    name, hung = sorted(fleet.web().items())[1]
    os.kill(hung["pid"], signal.SIGSTOP)
    try:
        await async_wait_for(
            lambda: fleet.state()["nginx_down"] == [hung["port"]], timeout=30, what=f"{name} marked down in nginx"
        )
        upstreams = set()
        for _ in range(12):
            status, _body, headers = await asyncio.to_thread(get_with_headers, f"{fleet.lb_url}/api/rooms")
            assert status == 200
            upstreams.add(headers["X-Upstream"])
        assert f"127.0.0.1:{hung['port']}" not in upstreams
        assert len(upstreams) == len(fleet.web()) - 1, upstreams
    finally:
        os.kill(hung["pid"], signal.SIGCONT)
    await async_wait_for(lambda: fleet.state()["nginx_down"] == [], timeout=30, what=f"{name} back in nginx")
    await async_wait_for(fleet.all_web_ready, timeout=30, what="all instances ready again")


def get_with_headers(url: str) -> tuple[int, bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read(), dict(resp.headers)
