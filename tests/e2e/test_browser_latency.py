"""Scenario (d) of the benchmark, end to end inside the browser-test session:
the same timed exchange as ``python -m bench.browser_latency``, on the Reflex
build the other browser tests use (one build per test run). Checks that every
message reached the other tab and that a latency was measured for each; no
timing assertions."""

from __future__ import annotations

import pytest

from bench.browser_latency import run_exchanges, summarize

pytestmark = [pytest.mark.e2e, pytest.mark.bench_smoke]


def test_browser_latency_scenario_measures_every_message(context):
    result = run_exchanges(context, messages=5, warmup=1, timeout_s=15)
    assert result["sent"] == result["arrived"] == result["shown_in_receiver_at_end"] == 5
    assert result["missing"] == []
    assert len(result["latencies_ms"]) == 5 and all(v >= 0 for v in result["latencies_ms"])
    assert summarize(result["latencies_ms"])["median_ms"] is not None
