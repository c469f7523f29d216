"""The browser engine's pure helpers (assets/chatlog.js), checked by Node's own test runner."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT


def test_chatlog_helpers_pass_their_node_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: scripts/bootstrap.sh node (the Makefile puts .tools first)")
    result = subprocess.run(
        [node, "--test", "tests/unit/chatlog.test.mjs"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout, result.stdout
