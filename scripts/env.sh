# Sourced by the Makefile's recipes: puts the project-local tools first on PATH
# and keeps Reflex offline-friendly and inside the project folder.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="$ROOT/.venv/bin:$ROOT/.tools/node_modules/.bin:$PATH"
# The Reflex UI has a virtualenv of its own (reflex caps redis<8; the backend needs 8.1):
# run reflex and the UI server as "$FLEETCHAT_UI_VENV/bin/..." (not on PATH on purpose).
export FLEETCHAT_UI_VENV="${FLEETCHAT_UI_VENV:-$ROOT/.venv-ui}"
export REFLEX_USE_SYSTEM_BUN=1
export REFLEX_CHECK_LATEST_VERSION=false
export REFLEX_TELEMETRY_ENABLED=false
export REFLEX_DIR="$ROOT/.tools/reflex"
export BUN_INSTALL_CACHE_DIR="$ROOT/.tools/bun-cache"
if command -v npm >/dev/null 2>&1 && [ -z "${NPM_CONFIG_REGISTRY:-}" ]; then
  NPM_CONFIG_REGISTRY="$(npm config get registry 2>/dev/null)"; export NPM_CONFIG_REGISTRY
fi
