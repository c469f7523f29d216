"""What an instance pays for rooms it has nobody in: per-room routing against one shared channel.

Two scenarios, each run for the working tree and, with ``--compare DIR``, for
another checkout of fleetchat (say ``git worktree add <dir> <commit>`` of the
commit before per-room routing), alternating, in one run:

- ``ratio``: 3 instances over one Redis; one room whose ``--members`` (24) all sit on
  instance 0, ``--rate`` (360) messages/s into it. Reported: each instance's CPU above
  its own idle (read from ``/proc`` over the same window), and the CPU of the
  instances without members as a share of the serving instance's.
- ``scaling``: ``--rooms`` (4) rooms of ``--scale-members`` (12) at ``--scale-rate``
  (120) msg/s, spread evenly over 1, 2 and 4 instances (every room's members on
  one instance, the same total load each time; light enough that the load
  generators leave the 2 cores to the servers). Reported:
  total deliveries/s, each instance's CPU, and CPU per delivery per instance, which
  stays flat when an instance pays only for its own rooms. As the control, one
  instance alone with half and with a quarter of the rooms: the load each instance
  of the 2- and 4-instance fleets carries, without the fleet.

    python -m bench.routing [--compare DIR] [--rounds 3] [--json OUT]

Load comes from bench/loadgen (its lean Socket.IO client), one load generator per room.
A scenario, not a test: it prints a JSON report and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench.run import (
    LOADGEN_DIR,
    ROOT,
    BenchError,
    Fleet,
    Loadgen,
    Redis,
    TargetSpec,
    cpu_s,
    ensure_npm_deps,
    find_node,
)


def scrape(url: str) -> str:
    """The instance's ``/metrics`` text."""
    return urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()


def sample(text: str, name: str) -> float | None:
    """The value of the unlabelled sample ``name`` in a ``/metrics`` text, None if it has none."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


class Instances(Fleet):
    """``n`` instances of the fleetchat checkout at ``code`` over ``redis``, with the
    Procfile's server flags (bench.run's ``Fleet``, the load generator's limits lifted)."""

    def __init__(self, code: Path, n: int, redis: Redis, logdir: Path, tag: str) -> None:
        spec = TargetSpec(
            name="fleetchat",
            label=f"fleetchat ({code.name})",
            instances=n,
            extra=["--workers", "0", "--worker-class", "uvloop"],
            env={"CHAT_ACCEL": "on"},
            root=code,
        )
        super().__init__(spec, redis, "", logdir, tag)

    def url(self, i: int) -> str:
        return self.urls[i]

    def cpu(self) -> list[float]:
        return [cpu_s([p.pid]) for p in self.procs]

    def received(self) -> list[float | None]:
        """Each instance's ``fleetchat_pubsub_received_total`` (None where the checkout has no such metric)."""
        return [sample(scrape(url), "fleetchat_pubsub_received_total") for url in self.urls]


def run_rooms(
    node: str,
    instances: Instances,
    placement: list[int],
    members: int,
    rate: float,
    args: argparse.Namespace,
    logdir: Path,
    tag: str,
) -> dict:
    """One load generator per room (room k's ``members`` all on instance ``placement[k]``,
    ``rate`` msg/s into it), started together; each instance's CPU above its idle over
    the window in which every generator is sending."""
    idle_from = instances.cpu()
    time.sleep(args.idle)
    idle_rate = [(b - a) / args.idle for a, b in zip(idle_from, instances.cpu(), strict=True)]
    senders = max(1, members // 3)
    gens = []
    for k, where in enumerate(placement):
        cfg = {
            "mode": "room",
            "urls": [instances.url(where)],
            "room": f"{tag}-room{k}",
            "clients": members,
            "senders": senders,
            "rate": rate / senders,
            "window": 1,
            "duration": args.duration,
            "warmup": 1,
            "workers": 1,
            "textBytes": 32,
            "connectTimeout": 30,
            "drainTimeout": 10,
            "tag": f"{tag}-{k}",
            "namePrefix": f"{tag}{k}u",
        }
        gens.append(Loadgen(node, cfg, logdir / f"{tag}-loadgen-{k}.log"))
    bound = 30 + args.duration + 60
    try:
        first = None
        for gen in gens:
            ready = gen.until("ready", bound)
            if ready.get("event") != "ready":
                raise BenchError(f"load generator failed to set up: {ready}")
            first = first or time.monotonic()
        # a generator measures from 1.3 s after it is ready for ``duration`` s: use the
        # part of that every generator shares, less half a second at each end
        begin = time.monotonic() + 1.8
        stop = first + 1.3 + args.duration - 0.5
        if stop - begin < args.duration / 2:
            raise BenchError("the load generators became ready too far apart to share a window")
        time.sleep(begin - time.monotonic())
        heard_from, start, started = instances.received(), instances.cpu(), time.monotonic()
        time.sleep(max(0.0, stop - time.monotonic()))
        end, elapsed, heard = instances.cpu(), time.monotonic() - started, instances.received()
        results = [gen.until("result", bound) for gen in gens]
    finally:
        for gen in gens:
            gen.close()
    for res in results:
        if not res.get("ok"):
            raise BenchError(f"load generator failed: {res.get('error')}")
    busy = [max(0.0, (b - a) / elapsed - idle) for a, b, idle in zip(start, end, idle_rate, strict=True)]
    deliveries = [0.0] * len(instances.procs)
    for res, where in zip(results, placement, strict=True):
        deliveries[where] += res["deliveries_per_s"]
    return {
        "deliveries_per_s": sum(deliveries),
        "deliveries_per_s_by_instance": deliveries,
        "cpu_by_instance": busy,
        "idle_cpu_by_instance": idle_rate,
        "us_per_delivery_by_instance": [c / d * 1e6 if d else None for c, d in zip(busy, deliveries, strict=True)],
        "pubsub_received_per_s_by_instance": [
            None if a is None or b is None else (b - a) / elapsed for a, b in zip(heard_from, heard, strict=True)
        ],
        "loss": sum(r["missing"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
    }


def ratio(node: str, code: Path, redis: Redis, args: argparse.Namespace, logdir: Path, tag: str) -> dict:
    redis.flush()
    fleet = Instances(code, 3, redis, logdir, tag)
    try:
        res = run_rooms(node, fleet, [0], args.members, args.rate, args, logdir, tag)
    finally:
        fleet.stop()
    serving = res["cpu_by_instance"][0]
    res["bystander_share"] = [c / serving if serving else None for c in res["cpu_by_instance"][1:]]
    return res


def scaling(node: str, code: Path, redis: Redis, args: argparse.Namespace, logdir: Path, tag: str) -> dict:
    """The same total load over 1, 2 and 4 instances; then, as the control, one instance
    carrying only what each instance of the 2- and 4-instance fleets carried (half and a
    quarter of the rooms). CPU per delivery rises as an instance's load falls (fewer
    deliveries share each wakeup and each write); the control says how much of a rise
    across the curve is that, and how much is the fleet's size."""
    curve = {}
    points = [(n, args.rooms, str(n)) for n in (1, 2, 4)]
    for rooms in {args.rooms // 2, args.rooms // 4} - {0}:
        points.append((1, rooms, f"1 instance, {rooms} of the {args.rooms} rooms"))
    for n, rooms, key in points:
        redis.flush()
        label = f"{tag}-n{n}r{rooms}"
        fleet = Instances(code, n, redis, logdir, label)
        try:
            placement = [k % n for k in range(rooms)]
            curve[key] = run_rooms(node, fleet, placement, args.scale_members, args.scale_rate, args, logdir, label)
        finally:
            fleet.stop()
    return curve


def pct(values: list) -> str:
    return ", ".join("-" if v is None else f"{v * 100:.1f}%" for v in values)


def markdown(report: dict) -> str:
    lines = [
        "| tree | scenario | deliveries/s | CPU by instance (above idle) | us/delivery by instance "
        "| pub/sub messages/s received by instance | bystanders |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for tree, rounds in report["trees"].items():
        for scenario in ("ratio", "scaling"):
            for run in rounds:
                if scenario not in run:
                    continue
                entries = {"3": run["ratio"]} if scenario == "ratio" else run["scaling"]
                for n, res in entries.items():
                    per = ", ".join("-" if u is None else f"{u:.1f}" for u in res["us_per_delivery_by_instance"])
                    share = pct(res.get("bystander_share", [])) or "-"
                    label = "ratio (3 instances)" if scenario == "ratio" else f"{n} instance(s)" if n.isdigit() else n
                    heard = ", ".join(
                        "-" if h is None else f"{h:,.0f}" for h in res.get("pubsub_received_per_s_by_instance", [])
                    )
                    lines.append(
                        f"| {tree} | {label} | {res['deliveries_per_s']:,.0f} | {pct(res['cpu_by_instance'])} "
                        f"| {per} | {heard or '-'} | {share} |"
                    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", type=Path, help="another fleetchat checkout to run side by side")
    parser.add_argument("--scenarios", default="ratio,scaling")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--members", type=int, default=24, help="clients per room")
    parser.add_argument("--rate", type=float, default=360.0, help="messages/s into each room")
    parser.add_argument("--rooms", type=int, default=4, help="rooms of the scaling scenario")
    parser.add_argument("--scale-members", type=int, default=12, help="clients per room, scaling scenario")
    parser.add_argument("--scale-rate", type=float, default=120.0, help="messages/s per room, scaling scenario")
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle CPU read before the load")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    node = find_node()
    ensure_npm_deps(LOADGEN_DIR)
    trees = {"this tree": ROOT}
    if args.compare:
        trees[f"compare ({args.compare.name})"] = args.compare.resolve()
    scenarios = args.scenarios.split(",")
    logdir = Path(tempfile.mkdtemp(prefix="fc-routing-"))
    redis = Redis(logdir)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "trees": {t: [] for t in trees}}
    try:
        for r in range(args.rounds):
            for t, (tree, code) in enumerate(trees.items()):
                run: dict = {}
                tag = f"r{r}t{t}"
                if "ratio" in scenarios:
                    run["ratio"] = ratio(node, code, redis, args, logdir, tag + "ratio")
                if "scaling" in scenarios:
                    run["scaling"] = scaling(node, code, redis, args, logdir, tag + "scale")
                report["trees"][tree].append(run)
                print(json.dumps({tree: run}), flush=True)
    finally:
        redis.stop()
    shares = {
        tree: statistics.median(max(x for x in run["ratio"]["bystander_share"] if x is not None) for run in rounds)
        for tree, rounds in report["trees"].items()
        if rounds and "ratio" in rounds[0]
    }
    report["bystander_share_median_of_max"] = shares
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print("bystander CPU / serving CPU (median over rounds of the larger bystander):", shares)
    print("logs:", logdir)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench.routing"
    raise SystemExit(main())
