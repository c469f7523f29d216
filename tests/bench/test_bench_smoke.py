"""End-to-end smoke test of the benchmark driver with tiny parameters.

It starts its own Redis, two instances of each target and the Node load
generator (installing the npm packages from their lockfiles when missing), and
checks the report's shape and that nothing was lost. No timing assertions.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(600)]


def _node_available() -> bool:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "node"
    return local.exists() or shutil.which("node") is not None


def _run_driver(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """``bench.run --smoke`` with ``args``; it must succeed and write one report, returned."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", *args, "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reports = sorted(p for p in tmp_path.glob("*.json") if p.name != "latest.json")
    assert len(reports) == 1
    return proc, json.loads(reports[0].read_text())


needs_redis = pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")
needs_node = pytest.mark.skipif(not _node_available() or not shutil.which("npm"), reason="node/npm are not installed")


@needs_redis
@needs_node
def test_driver_end_to_end(tmp_path):
    targets = ["node", "naive"]
    if (ROOT / "backend" / "app.py").exists():
        targets[:0] = ["fleetchat", "fleetchat-accel-off"]  # the fast path on and off, side by side
    proc, report = _run_driver(tmp_path, "--targets", ",".join(targets))
    for key in ("date", "machine", "params", "targets", "scenarios", "runs", "summary", "ratios", "skipped"):
        assert key in report, key
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert report["params"]["client"] == "lean"
    assert set(report["targets"]) >= {"node", "naive"}
    assert set(report["scenarios"]) == {"fanout", "saturation", "idle"}
    assert len(report["runs"]) == len(report["targets"]) * 3
    for run in report["runs"]:
        assert "error" not in run, run
        res = run["result"]
        if run["scenario"] == "idle":
            assert res["held"] > 0 and res["kb_per_conn"] is not None
            assert res["still_held"] == res["held"]
        else:
            assert res["loss"] == 0, run
            assert res["ack_failures"] == 0, run
            assert res["duplicates"] == 0, run
            assert res["acked"] > 0
            assert res["deliveries"] == res["expected_deliveries"]
            assert res["raw"]["client"] == "lean"
            for key in ("deliveries_per_s", "p50_ms", "p99_ms"):
                assert res[key] is not None, key
            # what the sending phase cost the servers (counts, not timings)
            assert res["server_cpu_s"] >= 0 and res["server_us_per_delivery"] is not None
            if run["target"].startswith("fleetchat"):
                assert res["redis_commands_per_send"].get("evalsha", 0) >= 1, res["redis_commands_per_send"]
    for target in report["targets"]:
        for scenario in ("fanout", "saturation", "idle"):
            assert report["summary"][target][scenario]["runs"] == 1
    table = (tmp_path / "latest.md").read_text()
    assert "| target |" in table and "naive" in table
    assert "| target |" in proc.stdout


@needs_redis
@needs_node
@pytest.mark.skipif(not shutil.which("redis-cli"), reason="redis-cli is not installed")
@pytest.mark.skipif(not (ROOT / "backend" / "app.py").exists(), reason="no fleetchat in this tree")
def test_driver_over_a_redis_cluster(tmp_path):
    """``--redis-cluster``: fleetchat and the Node peer over a 3-master cluster the driver
    starts itself; both publish with SPUBLISH (fleetchat's per-room channels, the Node
    peer's sharded adapter), and the counts come from the masters together."""
    _, report = _run_driver(
        tmp_path, "--redis-cluster", "--targets", "fleetchat,node", "--scenarios", "fanout,saturation"
    )
    assert report["params"]["redis_cluster"] is True
    assert "Redis Cluster" in report["labels"]["fleetchat"] and "sharded" in report["labels"]["node"]
    assert len(report["runs"]) == 4
    for run in report["runs"]:
        assert "error" not in run, run
        res = run["result"]
        assert res["loss"] == 0 and res["ack_failures"] == 0 and res["duplicates"] == 0, run
        assert res["acked"] > 0 and res["deliveries"] == res["expected_deliveries"]
        commands = res["redis_commands_per_send"]
        assert commands.get("spublish", 0) >= 1, commands  # not PUBLISH: the sharded channels
        assert commands.get("publish", 0) == 0, commands
        if run["target"] == "fleetchat":
            assert commands.get("evalsha", 0) >= 1, commands
    assert sorted(p.name for p in tmp_path.glob("logs/*/redis-*.log")) == ["redis-1.log", "redis-2.log", "redis-3.log"]
    assert "Cluster of 3 masters" in (tmp_path / "latest.md").read_text()


@needs_redis
@needs_node
def test_driver_measures_with_socketio_client_too(tmp_path):
    """``--client socketio``: the load generator's sockets are socket.io-client's (sections
    (a)-(o) of bench/README were measured so), against the Node peer and fleetchat where
    present, with nothing lost either way."""
    targets = "fleetchat,node" if (ROOT / "backend" / "app.py").exists() else "node"
    _, report = _run_driver(tmp_path, "--client", "socketio", "--targets", targets, "--scenarios", "saturation")
    assert report["params"]["client"] == "socketio"
    for run in report["runs"]:
        assert "error" not in run, run
        res = run["result"]
        assert res["raw"]["client"] == "socketio"
        assert res["loss"] == 0 and res["ack_failures"] == 0 and res["duplicates"] == 0, run
        assert res["acked"] > 0 and res["deliveries"] == res["expected_deliveries"]
    assert "socket.io-client" in (tmp_path / "latest.md").read_text()
