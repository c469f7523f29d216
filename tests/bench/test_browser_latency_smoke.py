"""Scenario (d)'s statistics. The scenario itself runs end to end in
tests/e2e/test_browser_latency.py, on the browser tests' Reflex build."""

import pytest

from bench.browser_latency import summarize

pytestmark = pytest.mark.bench_smoke


def test_summary_statistics():
    summary = summarize([float(v) for v in range(10, 0, -1)])
    assert summary == {"median_ms": 5.5, "p90_ms": 9.0, "max_ms": 10.0, "min_ms": 1.0, "mean_ms": 5.5}
    assert summarize([3.0, 1.0, 2.0])["median_ms"] == 2.0
    assert summarize([])["median_ms"] is None
