#!/usr/bin/env bash
# Runs the whole suite: lint, then unit, integration, fleet, e2e and the bench
# smoke test, two workers in parallel (browser tests share one worker and one
# Reflex build). Expects scripts/env.sh to be sourced (the Makefile does it).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
echo "[test] ruff"
ruff check .
workers=${TEST_WORKERS:-2}
echo "[test] pytest with $workers workers"
set +e
python -m pytest -n "$workers" --dist loadgroup -p no:cacheprovider -q -rfE "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "no tests were collected: that is a failure here" >&2
  exit 1
fi
exit $status
