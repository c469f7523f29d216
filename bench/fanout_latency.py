"""Where the fan-out's median goes: the parts of one delivery, read off a fleet under the fan-out load.

Runs bench.run's fan-out scenario shape (``--clients`` over 2 instances, one
room, ``--senders`` x ``--rate`` msg/s) against two fleetchat instances, then
reads from each instance's ``/metrics``:

- ``fleetchat_append_seconds``: the store's append as the sending instance waits
  for it (the message cannot be delivered anywhere before it has its ``seq``);
- ``fleetchat_fanout_latency_seconds``: the message's timestamp to the relay
  handing it to the local fan-out (local sends and pub/sub arrivals together);
- ``fleetchat_pubsub_lag_seconds``: the timestamp to the arrival over pub/sub
  at the other instance;
- ``fleetchat_relay_held_total``/``fleetchat_relay_replayed_total``: messages
  that waited for an earlier one, or were read back from the store;

and, from the load generator, send -> receive and send -> ack (client clocks).
Timestamps are whole milliseconds (the message's ``ts``), so the two
``ts``-based medians read up to 1 ms high; their difference does not.

    python -m bench.fanout_latency [--duration 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.routing import Instances, sample, scrape
from bench.run import LOADGEN_DIR, ROOT, Redis, ensure_npm_deps, find_node, run_room

PARTS = {
    "append": "fleetchat_append_seconds",
    "ts_to_local_fanout": "fleetchat_fanout_latency_seconds",
    "ts_to_pubsub_arrival": "fleetchat_pubsub_lag_seconds",
}


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one histogram in a ``/metrics`` text."""
    out = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Linear interpolation inside the bucket that holds the q-th observation (ms)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    want, low, below = q * total, 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= want:
            if upper == float("inf"):
                return low * 1000
            inside = cumulative - below
            return (low + (upper - low) * ((want - below) / inside if inside else 1)) * 1000
        low, below = upper, cumulative
    return None


def merged(texts: list[str], name: str) -> list[tuple[float, float]]:
    per = [histogram(text, name) for text in texts]
    return [(per[0][i][0], sum(p[i][1] for p in per)) for i in range(len(per[0]))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--senders", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20.0, help="messages/s per sender")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    node = find_node()
    ensure_npm_deps(LOADGEN_DIR)
    logdir = Path(tempfile.mkdtemp(prefix="fc-fanout-latency-"))
    redis = Redis(logdir)
    fleet = Instances(ROOT, 2, redis, logdir, "fl")
    try:
        # bench.run's fan-out scenario, with its load generator settings
        settings = argparse.Namespace(
            warmup=1, loadgen_workers=2, text_bytes=32, connect_timeout=30, drain_timeout=10, py_spy=None, client="lean"
        )
        result = run_room(
            settings,
            node,
            fleet,
            logdir / "loadgen.log",
            clients=args.clients,
            senders=args.senders,
            rate=args.rate,
            duration=args.duration,
            window=1,
            room="bench-fanout",
        )
        texts = [scrape(url) for url in fleet.urls]
        report = {
            "client_send_to_receive_p50_ms": result["p50_ms"],
            "client_send_to_receive_p99_ms": result["p99_ms"],
            "client_send_to_ack_p50_ms": result["ack_p50_ms"],
            "deliveries_per_s": result["deliveries_per_s"],
            "loss": result["loss"],
            "messages_acked": result["acked"],
            "relay_held": sum(sample(t, "fleetchat_relay_held_total") or 0 for t in texts),
            "relay_replayed": sum(sample(t, "fleetchat_relay_replayed_total") or 0 for t in texts),
        }
        for part, name in PARTS.items():
            buckets = merged(texts, name)
            report[part + "_p50_ms"] = quantile(buckets, 0.5)
            report[part + "_p90_ms"] = quantile(buckets, 0.9)
    finally:
        fleet.stop()
        redis.stop()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
