"""Smoke test of scenario (g), ``bench.archive``, with tiny parameters: its own
PostgreSQL and redis-server, 2,000 messages paged back to seq 1 and forward,
1,000 written through ``Archive.write`` and through the archiver. No timing
assertions: it checks that every measure was printed."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.bench_smoke, pytest.mark.timeout(300)]


def test_archive_bench_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.archive", "--messages", "2000", "--writes", "1000"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    for line in ("back to seq 1", "from 0 to 2,000", "900,000 deep", "Archive.write", "archiver (fc:archive"):
        assert line in proc.stdout, proc.stdout
