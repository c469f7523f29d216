"""Smoke test of scenario (d): `python -m bench.browser_latency --smoke` end to end.

It starts its own embedded backend, builds and starts the Reflex UI in prod
mode and drives two Chromium tabs through 5 messages. It checks that the run
completed, every message reached the other tab and the JSON report has its
keys. No timing assertions.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.browser_latency import summarize

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(900)]


def test_summary_statistics():
    summary = summarize([float(v) for v in range(10, 0, -1)])
    assert summary == {"median_ms": 5.5, "p90_ms": 9.0, "max_ms": 10.0, "min_ms": 1.0, "mean_ms": 5.5}
    assert summarize([3.0, 1.0, 2.0])["median_ms"] == 2.0
    assert summarize([])["median_ms"] is None


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no `chromium` on PATH (apt-get install -y chromium)")
def test_browser_latency_smoke(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench.browser_latency", "--smoke", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,  # a cold Reflex build (no bun cache) can take minutes on 2 cores
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reports = list(tmp_path.glob("browser-*.json"))
    assert len(reports) == 1, reports
    report = json.loads(reports[0].read_text())
    for key in ("scenario", "date", "machine", "params", "ui_startup_s", "result", "summary"):
        assert key in report, key
    assert report["machine"]["cores"] >= 1 and report["machine"]["chromium"]
    assert report["params"]["smoke"] is True and report["params"]["messages"] == 5
    result = report["result"]
    assert result["sent"] == result["arrived"] == result["shown_in_receiver_at_end"] == 5
    assert result["missing"] == []
    assert len(result["latencies_ms"]) == 5
    for key in ("median_ms", "p90_ms", "max_ms", "min_ms", "mean_ms"):
        assert report["summary"][key] is not None, key
    assert "| (d) Reflex tab to tab | 5 | 5 |" in proc.stdout
