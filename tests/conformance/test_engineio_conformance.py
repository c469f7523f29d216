"""socket.io's own Engine.IO protocol test-suite (socketio/socket.io-protocol, vendored
under ``engineio/``) against fleetchat with the fast path on and off, and against a
plain python-engineio server as the baseline: fleetchat must pass every case the
stock library passes. The suite is a mocha file; its npm dependencies are installed
by ``scripts/bootstrap.sh node`` into ``.tools/engineio-conformance`` from the
committed package-lock.json. The pass counts are printed and written to
``artifacts/engineio-conformance.txt``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from deploy.fleet import backend_argv
from tests.support import ROOT, Backend

pytestmark = pytest.mark.timeout(300)

VENDORED = Path(__file__).parent / "engineio"
TOOLS = ROOT / ".tools" / "engineio-conformance"
SUITE_ENV = {
    # the suite's own constants: PING_INTERVAL 300 ms, PING_TIMEOUT 200 ms, maxPayload 1000000
    "CHAT_PING_INTERVAL_SECONDS": "0.3",
    "CHAT_PING_TIMEOUT_SECONDS": "0.2",
    "CHAT_MAX_PAYLOAD_BYTES": "1000000",
    "CHAT_CONNECTS_PER_MINUTE": "0",
}


RACES = frozenset(
    {
        # polls exactly ping interval + ping timeout after the handshake: whether the session
        # is gone by then depends on when python-engineio's service task looks (either server)
        "Engine.IO protocol heartbeat HTTP long-polling should close the session upon ping timeout",
        # sends "2probe" and "5" and polls at once: whether the upgrade is done first is a race
        "Engine.IO protocol upgrade should ignore HTTP requests with same sid after upgrade",
    }
)
"""Cases decided by timing at the suite's own margins: reported, not required."""


class StockEngineIO(Backend):
    """A plain ``engineio.AsyncServer`` under the same hypercorn command as the backend."""

    def argv(self) -> list[str]:
        argv = backend_argv(f"127.0.0.1:{self.port}")
        argv[argv.index("backend.app:asgi")] = "tests.conformance.stock_engineio:app"
        return argv


def _mocha() -> Path:
    mocha = TOOLS / "node_modules" / ".bin" / "mocha"
    if not mocha.exists():
        subprocess.run([str(ROOT / "scripts" / "bootstrap.sh"), "node"], check=True, cwd=ROOT)
    if not mocha.exists() or shutil.which("node") is None:
        pytest.fail("the conformance suite's npm dependencies are missing: run scripts/bootstrap.sh node")
    return mocha


def run_suite(url: str) -> dict[str, bool]:
    """Run the Engine.IO part of the suite against ``url``: case title -> passed."""
    run_dir = TOOLS / f"run-{uuid.uuid4().hex[:8]}"  # node resolves the suite's imports from TOOLS/node_modules
    run_dir.mkdir(parents=True)
    try:
        for name in ("test-suite.js", "node-imports.js"):
            shutil.copy(VENDORED / name, run_dir / name)
        out = subprocess.run(
            [str(_mocha()), "test-suite.js", "--grep", "^Engine.IO protocol", "--reporter", "json", "--exit"],
            cwd=run_dir,
            env={**os.environ, "ENGINEIO_URL": url},
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    report = json.loads(out.stdout[out.stdout.index("{") :])
    results = {test["fullTitle"]: True for test in report["passes"]}
    results.update({test["fullTitle"]: False for test in report["failures"]})
    assert results, out.stderr[-2000:]
    return results


def test_fleetchat_passes_every_engineio_case_the_stock_library_passes() -> None:
    _mocha()
    targets = {
        "stock python-engineio": StockEngineIO(env=SUITE_ENV),
        "fleetchat, accel on": Backend(env={**SUITE_ENV, "CHAT_ACCEL": "on"}),
        "fleetchat, accel off": Backend(env={**SUITE_ENV, "CHAT_ACCEL": "off"}),
    }
    results: dict[str, dict[str, bool]] = {}
    try:
        for name, server in targets.items():
            server.start()
            results[name] = run_suite(server.url)
            stock = results[next(iter(targets))]
            for _ in range(2):
                # a few cases race by design (the upgrade's "5" against an immediate poll, 300 ms
                # heartbeats on a shared machine): a case the baseline passed gets two more runs
                missed = [t for t, ok in stock.items() if ok and t not in RACES and not results[name].get(t)]
                if not missed:
                    break
                again = run_suite(server.url)
                results[name].update({title: True for title in missed if again.get(title)})
            server.kill()
    finally:
        for server in targets.values():
            server.kill()
    lines = []
    for name, cases in results.items():
        failed = sorted(title for title, ok in cases.items() if not ok)
        lines.append(f"{name}: {sum(cases.values())}/{len(cases)} Engine.IO cases passed")
        lines.extend(f"    failed: {title}" for title in failed)
    summary = "\n".join(lines)
    print("\n" + summary)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    (ROOT / "artifacts" / "engineio-conformance.txt").write_text(summary + "\n")
    stock = {title for title, ok in results["stock python-engineio"].items() if ok and title not in RACES}
    for name in ("fleetchat, accel on", "fleetchat, accel off"):
        passed = {title for title, ok in results[name].items() if ok}
        assert stock <= passed, f"{name} fails cases stock python-engineio passes: {sorted(stock - passed)}\n{summary}"
