#!/usr/bin/env bash
# The Procfile's `ui` process: serve the page that `reflex export` built.
#
#   scripts/ui.sh build   build it (run this in the platform's build step, once per release)
#   scripts/ui.sh         serve it on $PORT; builds first if the build step did not
#
# Every ui process must serve the same build: one that builds at its own start
# gets asset names of its own, so a router that sends a page to one process and
# its assets to another would break. Build in the build step, then scale `ui` to N.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh
build=.web/build/client
if [ "${1:-}" = build ] || [ ! -f "$build/index.html" ]; then
  PATH="$FLEETCHAT_UI_VENV/bin:$PATH" "$FLEETCHAT_UI_VENV/bin/reflex" export --frontend-only --no-zip
fi
[ "${1:-}" = build ] && exit 0
CHAT_UI_BUILD="$build" exec "$FLEETCHAT_UI_VENV/bin/hypercorn" frontend.serve:app --bind "0.0.0.0:${PORT:-3000}"
