"""Sign-in under load: logins/s on one instance, and what a login storm costs chat traffic.

Argon2id is slow on purpose (backend/passwords.py: OWASP's minimum, 19 MiB,
2 passes, 1 lane), so this measures, on one embedded instance run with the
Procfile's server flags:

1. **logins/s**: `--login-clients` clients each POST `/api/auth/login` in a
   loop (right password) for `--duration` seconds; throughput and latency.
2. **storm impact**: a room of `--receivers` Socket.IO clients and one sender
   at `--rate` msg/s; the delivery latency (send to receive, every receiver)
   is measured in alternating phases without and with `--storm` logins/s
   (open loop), `--rounds` of each, in one run, and compared.

    .venv/bin/python -m bench.logins             # the figures in bench/README.md
    .venv/bin/python -m bench.logins --smoke     # a few seconds of each
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from bench.browser_latency import percentile
from bench.run import host_info, py_version
from tests.support import Backend

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "bench password that is long enough"
ENV = {
    "CHAT_RATE": "100000",
    "CHAT_RATE_BURST": "100000",
    "CHAT_CONNECTS_PER_MINUTE": "0",
    "CHAT_LOGIN_FAILURES_PER_ADDRESS": "1000000",
}


def log(msg: str) -> None:
    print(f"[logins {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summary(values: list[float]) -> dict[str, float | None]:
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
    }


async def create_accounts(http: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    names = [f"bench{uuid.uuid4().hex[:10]}" for _ in range(count)]
    for name in names:
        async with http.post(f"{url}/api/auth/signup", json={"username": name, "password": PASSWORD}) as r:
            if r.status != 201:
                raise RuntimeError(f"signup failed: {r.status} {await r.text()}")
    return names


async def login(http: aiohttp.ClientSession, url: str, name: str) -> float:
    started = time.perf_counter()
    async with http.post(f"{url}/api/auth/login", json={"username": name, "password": PASSWORD}) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"login failed: {r.status}")
    return (time.perf_counter() - started) * 1000


async def logins_per_second(url: str, names: list[str], clients: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession() as http:

        async def client(index: int) -> None:
            while time.perf_counter() < deadline:
                latencies.append(await login(http, url, names[index % len(names)]))

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
    return {"logins_per_s": round(len(latencies) / elapsed, 1), **summary(latencies)}


class Room:
    """Receivers in one room and a sender; delivery latency from the send time in the text."""

    def __init__(self, url: str, receivers: int) -> None:
        self.url, self.count = url, receivers
        self.room = f"bench-{uuid.uuid4().hex[:8]}"
        self.clients: list[socketio.AsyncClient] = []
        self.latencies: list[float] | None = None

    async def open(self) -> None:
        for i in range(self.count + 1):
            client = socketio.AsyncClient(reconnection=False)
            if i:
                client.on("message", self._received)
            await client.connect(self.url, auth={"name": f"listener {i}"}, transports=["websocket"], wait_timeout=10)
            ack = await client.call("join", {"room": self.room}, timeout=10)
            assert ack["ok"], ack
            self.clients.append(client)

    def _received(self, message: dict[str, Any]) -> None:
        if self.latencies is not None and message.get("text", "").startswith("t="):
            self.latencies.append(time.time() * 1000 - float(message["text"][2:]))

    async def send_for(self, seconds: float, rate: float) -> list[float]:
        self.latencies = []
        sender, interval = self.clients[0], 1 / rate
        next_at = time.perf_counter()
        deadline = next_at + seconds
        while next_at < deadline:
            text = f"t={time.time() * 1000:.3f}"
            await sender.emit("message", {"room": self.room, "text": text, "client_id": uuid.uuid4().hex})
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.sleep(1.0)  # the last deliveries
        latencies, self.latencies = self.latencies, None
        return latencies

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.disconnect()


async def storm(url: str, names: list[str], per_second: float, stop: asyncio.Event) -> int:
    """Open-loop logins at `per_second` until stop; how many completed."""
    done = 0
    async with aiohttp.ClientSession() as http:
        pending: set[asyncio.Task[float]] = set()
        interval, i = 1 / per_second, 0
        next_at = time.perf_counter()
        while not stop.is_set():
            task = asyncio.create_task(login(http, url, names[i % len(names)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            next_at += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.perf_counter()))
        results = await asyncio.gather(*pending, return_exceptions=True)
        done = i - sum(isinstance(r, Exception) for r in results)
    return done


async def storm_impact(url: str, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    room = Room(url, args.receivers)
    await room.open()
    phases: dict[str, list[float]] = {"quiet": [], "storm": []}
    logins_done = 0
    try:
        for _ in range(args.rounds):
            for phase in ("quiet", "storm"):
                stop = asyncio.Event()
                storming = asyncio.create_task(storm(url, names, args.storm, stop)) if phase == "storm" else None
                phases[phase] += await room.send_for(args.duration, args.rate)
                stop.set()
                if storming is not None:
                    logins_done += await storming
                log(f"{phase}: {len(phases[phase])} deliveries so far")
    finally:
        await room.close()
    quiet, stormy = summary(phases["quiet"]), summary(phases["storm"])
    ratio = stormy["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] and stormy["p99_ms"] else None
    return {"quiet": quiet, "storm": stormy, "p99_ratio": round(ratio, 2) if ratio else None, "logins": logins_done}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    backend = Backend(env=ENV).start()
    try:
        async with aiohttp.ClientSession() as http:
            names = await create_accounts(http, backend.url, args.accounts)
        log(f"{len(names)} accounts on {backend.url}")
        throughput = await logins_per_second(backend.url, names, args.login_clients, args.duration)
        log(f"logins/s: {throughput}")
        impact = await storm_impact(backend.url, names, args)
        log(f"storm impact: {impact}")
    finally:
        backend.kill()
    return {"throughput": throughput, "impact": impact}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.logins", description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=20)
    ap.add_argument("--login-clients", type=int, default=8, help="concurrent login loops for logins/s")
    ap.add_argument("--duration", type=float, default=15, help="seconds per phase")
    ap.add_argument("--receivers", type=int, default=50)
    ap.add_argument("--rate", type=float, default=20, help="messages/s into the room")
    ap.add_argument("--storm", type=float, default=20, help="logins/s during a storm phase")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.accounts, args.login_clients, args.duration, args.receivers, args.rounds = 3, 2, 2, 5, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    result = asyncio.run(measure(args))
    report = {
        "scenario": "logins",
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**host_info(), "argon2_cffi": py_version("argon2-cffi")},
        "params": {k: v for k, v in vars(args).items()},
        "argon2": {"type": "argon2id", "memory_kib": 19456, "time_cost": 2, "parallelism": 1},
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"logins-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
