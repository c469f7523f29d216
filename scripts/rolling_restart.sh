#!/usr/bin/env bash
# Restart the web instances of a running `make fleet` one by one, each back
# on /readyz before the next goes down. Options: scripts/rolling_restart.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec python -m deploy.rolling_restart "$@"
