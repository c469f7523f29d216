"""Smoke tests of scenarios (k) and (l), ``bench.routing`` and ``bench.fanout_latency``, with
tiny parameters (their own redis-server, instances and load generators). No timing
assertions: each report must be complete, and what routing guarantees must show in it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(300)]


def run(tmp_path: Path, *argv: str) -> dict:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", *argv, "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


def test_routing_bench_reports_that_instances_without_members_receive_nothing(tmp_path: Path) -> None:
    report = run(tmp_path, "bench.routing", "--scenarios", "ratio", "--members", "6", "--rate", "30", "--duration", "4")
    [result] = report["trees"]["this tree"]
    ratio = result["ratio"]
    assert ratio["loss"] == 0 and ratio["deliveries_per_s"] > 0
    serving, *bystanders = ratio["pubsub_received_per_s_by_instance"]
    assert serving > 0, "the serving instance hears its room's channel"
    assert bystanders == [0, 0], "the instances without members are not subscribed to it"
    assert len(ratio["bystander_share"]) == 2


def test_fanout_latency_bench_reports_every_part(tmp_path: Path) -> None:
    report = run(tmp_path, "bench.fanout_latency", "--clients", "20", "--duration", "3")
    assert report["loss"] == 0 and report["messages_acked"] > 0
    for part in ("append", "ts_to_local_fanout", "ts_to_pubsub_arrival"):
        assert report[part + "_p50_ms"] is not None, part
