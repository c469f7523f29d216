"""Smoke test of scenario (e), the UI-tier driver, with tiny parameters.

It builds and starts both UI designs (the working tree's and commit 389cc22's)
against real embedded backends, opens 5 simulated tabs per design, sends for 3 s,
and checks that every tab got every message and that latencies were recorded;
then `--page-loads --smoke` (one `reflex export`, 1 and 2 static UI processes,
short steps) and checks that every step loaded pages. No timing assertions.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(900)]


def test_ui_tier_end_to_end(tmp_path: Path) -> None:
    if not (ROOT / "backend" / "app.py").exists():
        pytest.fail("backend/app.py is missing: the UI-tier bench needs the real chat backend")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ui_tier", "--smoke", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reports = sorted(tmp_path.glob("ui-tier-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    report = json.loads(reports[0].read_text())
    runs = {run["design"]: run for run in report["runs"]}
    assert set(runs) == {"pages", "server-state"}
    for design, run in runs.items():
        assert "error" not in run, (design, run.get("error"))
        assert run["present"] == run["joined"] == run["tabs"] == 5, (design, run)
        assert run["sent"] == 3 and run["send_failed"] == 0, (design, run)
        assert run["wanted"] == 15 and run["delivered"] == 15, (design, run)
        assert run["lost"] == 0 and run["duplicates"] == 0, (design, run)
        assert run["p50_ms"] is not None and run["p99_ms"] is not None, (design, run)
        assert run["ui_cpu_pct"] is not None and run["ui_rss_after_kb"] > 0, (design, run)
    assert report["ratios"] and report["ratios"][0]["tabs"] == 5


def test_ui_tier_page_loads(tmp_path: Path) -> None:
    """`--page-loads --smoke`: one build, 1 and 2 static UI processes, a short probe and ladder for each."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ui_tier", "--page-loads", "--smoke", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    reports = sorted(tmp_path.glob("ui-pages-*.json"))
    assert len(reports) == 1 and reports[0].with_suffix(".md").exists()
    result = json.loads(reports[0].read_text())["page_loads"]
    assert result["paths"][0] == "/" and "/favicon.ico" in result["paths"]
    assert any(p.endswith(".js") for p in result["paths"]) and any(p.endswith(".css") for p in result["paths"])
    measured = [s for s in result["steps"] if not s.get("warmup")]
    assert {s["ui_processes"] for s in measured} == {1, 2}
    assert all(s["loads"] > 0 and s["p99_ms"] is not None for s in measured), measured
    assert all(s["failed"] == 0 for s in measured if s["browsers"]), measured
    assert set(result["probe_loads_per_s"]) == {"1", "2"}
