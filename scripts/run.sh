#!/usr/bin/env bash
# Run fleetchat on this machine: the chat backend (embedded mode: SQLite under
# data/, no Redis) and the Reflex UI pointed at it. Prints the one URL to open;
# Ctrl-C stops both.
#
#   scripts/run.sh          production build of the UI (rebuilt at each start)
#   scripts/run.sh --dev    Reflex dev server with hot reload
#
# Ports: PORT (backend, default 8000), UI_PORT (the page, default 3000) and,
# with --dev only, UI_BACKEND_PORT (Reflex's own server, default 3001).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/env.sh
source scripts/env.sh

mode=prod
case "${1:-}" in
  "") ;;
  --dev) mode=dev ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac

backend_port="${PORT:-8000}"
ui_port="${UI_PORT:-3000}"
ui_backend_port="${UI_BACKEND_PORT:-3001}"
[ "$mode" = prod ] && ui_backend_port="$ui_port"
ui_url="http://localhost:$ui_port"
logs=data/logs
mkdir -p "$logs"

pids=()
# Each child leads its own process group (setsid), so a signal to the group
# reaches everything it started (Reflex's server workers included). A group
# still alive 10 s after SIGTERM gets SIGKILL: Ctrl-C leaves nothing behind.
group_alive() { kill -0 -- "-$1" 2>/dev/null; }
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do group_alive "$pid" && alive=1; done
    [ "$alive" -eq 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    if group_alive "$pid"; then
      echo "process group $pid ignored SIGTERM; killing it" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'echo; echo "stopping..."; stop; exit 0' INT TERM
trap stop EXIT

wait_http() {  # url seconds pid: wait until the url answers 200, or fail if pid exits
  python - "$@" <<'PY'
import sys, time, urllib.request, os
url, seconds, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(f"the process behind {url} exited")
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
sys.exit(f"{url} did not answer within {seconds:.0f}s")
PY
}

unset REDIS_URL
# The Procfile's web command (deploy/hypercorn.toml, one process, uvloop), in embedded mode.
PORT="$backend_port" CHAT_CORS_ORIGINS="$ui_url,http://127.0.0.1:$ui_port" \
  setsid python -m hypercorn --config deploy/hypercorn.toml backend.app:asgi --bind "0.0.0.0:$backend_port" \
  --workers 0 --worker-class uvloop >"$logs/backend.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$backend_port/healthz" 30 "${pids[0]}" || { echo "backend failed, see $logs/backend.log" >&2; exit 1; }
echo "backend: http://127.0.0.1:$backend_port (log: $logs/backend.log)"

echo "starting the UI ($mode)..."
REFLEX_FRONTEND_PORT="$ui_port" REFLEX_BACKEND_PORT="$ui_backend_port" \
  CHAT_BACKEND_URL="${CHAT_BACKEND_URL:-http://127.0.0.1:$backend_port}" \
  PATH="$FLEETCHAT_UI_VENV/bin:$PATH" setsid "$FLEETCHAT_UI_VENV/bin/reflex" run --env "$mode" >"$logs/ui.log" 2>&1 &
pids+=("$!")
wait_http "http://127.0.0.1:$ui_backend_port/ping" 600 "${pids[1]}" \
  && wait_http "$ui_url/" 600 "${pids[1]}" || { echo "UI failed, see $logs/ui.log" >&2; exit 1; }

echo
echo "fleetchat is running. Open: $ui_url"
echo "(Ctrl-C stops it; logs in $logs/)"
wait -n "${pids[@]}" || true
echo "a process exited; see $logs/" >&2
