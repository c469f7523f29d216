#!/usr/bin/env bash
# Runs the whole suite: lint; then everything but the browser tests on two
# workers; then the browser tests in a pytest of their own (Playwright's sync
# API keeps an event loop running in its process, which pytest-asyncio tests
# must not share). Expects scripts/env.sh to be sourced (the Makefile does it).
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
rm -f artifacts/engineio-conformance.txt
echo "[test] ruff"
ruff check . || exit 1
workers=${TEST_WORKERS:-2}
common=(-p no:cacheprovider -q -rfE)

echo "[test] unit, integration, fleet, security, deploy, bench smoke ($workers workers)"
python -m pytest -n "$workers" --dist loadfile --ignore=tests/e2e --junitxml=artifacts/junit-main.xml "${common[@]}" "$@"
main_status=$?

echo "[test] browser (Reflex UI in Chromium)"
python -m pytest tests/e2e --junitxml=artifacts/junit-e2e.xml "${common[@]}" "$@"
e2e_status=$?

python - <<'PY'
import xml.etree.ElementTree as ET
totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for name in ("artifacts/junit-main.xml", "artifacts/junit-e2e.xml"):
    try:
        root = ET.parse(name).getroot()
    except (OSError, ET.ParseError):
        continue
    for suite in root.iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"fleetchat: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
if [ -f artifacts/engineio-conformance.txt ]; then
  echo "[test] Engine.IO conformance (socket.io-protocol test-suite)"
  cat artifacts/engineio-conformance.txt
fi
for s in $main_status $e2e_status; do
  if [ "$s" -eq 5 ]; then echo "a test run collected no tests: that is a failure here" >&2; exit 1; fi
  if [ "$s" -ne 0 ]; then exit "$s"; fi
done
exit 0
