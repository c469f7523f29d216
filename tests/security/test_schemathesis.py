"""schemathesis against /openapi.json of a real backend: no 5xx, every
response matches the schema (status, content type, body, headers), invalid
input is rejected, and undeclared methods are refused properly. Run once
anonymous and once with tokens required (with a valid Bearer token).

``positive_data_acceptance`` is left out on purpose: a room path segment is
any string to the schema (quart-schema cannot constrain it) and the text
limit is a setting, so schema-valid requests may rightly get 400/413.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backend.auth import mint
from tests.security.helpers import SECRET, examples, log_problems, record
from tests.support import Backend

pytestmark = pytest.mark.timeout(600)


def run_schemathesis(backend: Backend, *extra: str) -> tuple[str, dict[str, int]]:
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "schemathesis is not installed: pip install -r requirements-dev.txt"
    workdir = tempfile.mkdtemp(prefix="fc-st-")
    proc = subprocess.run(
        [
            st,
            "run",
            backend.url + "/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            str(max(10, examples(2000) // 10)),
            "--workers",
            "1",
            "--request-timeout",
            "10",
            *extra,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=540,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    counts = {"generated": 0, "operations": 0}
    m = re.search(r"(\d+) generated", out)
    if m:
        counts["generated"] = int(m.group(1))
    m = re.search(r"Tested: (\d+)", out)
    if m:
        counts["operations"] = int(m.group(1))
    return out, counts


@pytest.mark.parametrize("secured", [False, True], ids=["anonymous", "tokens"])
def test_http_api_conforms_to_its_schema_under_schemathesis(backends, secured):
    env = {"CHAT_RATE": "1000000", "CHAT_RATE_BURST": "1000000"}
    extra: list[str] = []
    if secured:
        env["CHAT_AUTH_SECRET"] = SECRET
        extra = ["--header", "Authorization: Bearer " + mint(SECRET, "schemathesis", "st-1", 3600)]
    backend = backends(env=env)
    _, counts = run_schemathesis(backend, *extra)
    assert counts["generated"] > 0 and counts["operations"] >= 5, counts
    assert not log_problems(backend.log()), log_problems(backend.log())[:5]
    record(f"schemathesis-{'tokens' if secured else 'anonymous'}", counts)
