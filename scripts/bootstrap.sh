#!/usr/bin/env bash
# Installs everything fleetchat needs, idempotently, into the project folder:
#   .venv/     Python virtualenv of the backend, worker, tests, bench (requirements-dev.txt)
#   .venv-ui/  Python virtualenv of the Reflex UI (requirements-ui.txt; reflex caps redis<8)
#   .tools/  Node 22 and bun from the npm registry (Reflex 0.10 needs both)
# plus Debian packages (redis-server, postgresql, chromium, nginx) where they are missing.
# Usage: scripts/bootstrap.sh [python] [ui] [node] [apt:PKG ...]   (no args = all)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

want_python=0; want_ui=0; want_node=0; apt_pkgs=()
if [ $# -eq 0 ]; then set -- python ui node apt:redis-server apt:chromium; fi
for arg in "$@"; do
  case "$arg" in
    python) want_python=1 ;;
    ui) want_ui=1 ;;
    node) want_node=1 ;;
    apt:*) apt_pkgs+=("${arg#apt:}") ;;
    *) echo "unknown bootstrap target: $arg" >&2; exit 2 ;;
  esac
done

# --- Debian packages -------------------------------------------------------
bin_for() { case "$1" in redis-server) echo redis-server ;; chromium) echo chromium ;; nginx) echo nginx ;; *) echo "$1" ;; esac; }
# Debian keeps PostgreSQL's server binaries off PATH, under its versioned bindir
pg_present() { command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; }
missing=()
for pkg in "${apt_pkgs[@]:-}"; do
  [ -n "$pkg" ] || continue
  if [ "$pkg" = postgresql ]; then pg_present || missing+=("$pkg"); continue; fi
  command -v "$(bin_for "$pkg")" >/dev/null 2>&1 || [ -x "/usr/sbin/$(bin_for "$pkg")" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --- Python ----------------------------------------------------------------
# venv DIR REQUIREMENTS...: create DIR if missing, then install the first requirements
# file whenever the digest of all of them changed (the others are what it includes).
venv() {
  local dir=$1 req=$2
  local PY=${PYTHON:-python3}
  if [ ! -x "$dir/bin/python" ]; then
    log "creating virtualenv $dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
  fi
  local stamp="$dir/.stamp-requirements" digest
  digest=$(cat "${@:2}" | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
    log "installing $req into $dir"
    "$dir/bin/pip" install -q -r "$req"
    echo "$digest" > "$stamp"
  fi
}
if [ $want_python -eq 1 ]; then venv .venv requirements-dev.txt requirements.txt; fi
if [ $want_ui -eq 1 ]; then venv .venv-ui requirements-ui.txt; fi

# --- Node 22 + bun for Reflex ------------------------------------------------
if [ $want_node -eq 1 ]; then
  if [ ! -x .tools/node_modules/.bin/node ] || [ ! -x .tools/node_modules/.bin/bun ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is required (install Node.js)" >&2; exit 1; }
    log "installing Node 22 and bun into .tools/ (from the npm registry)"
    mkdir -p .tools
    [ -f .tools/package.json ] || echo '{"name":"fleetchat-tools","private":true}' > .tools/package.json
    (cd .tools && npm install --silent --no-audit --no-fund node@22 bun >/dev/null)
  fi
  # socket.io-protocol's Engine.IO test-suite (tests/conformance/): its npm dependencies,
  # exactly as the committed package-lock.json pins them
  conf=.tools/engineio-conformance
  lock=tests/conformance/engineio/package-lock.json
  if [ ! -x "$conf/node_modules/.bin/mocha" ] || ! cmp -s "$lock" "$conf/package-lock.json"; then
    log "installing the Engine.IO conformance suite's npm dependencies into $conf"
    mkdir -p "$conf"
    cp tests/conformance/engineio/package.json "$lock" "$conf/"
    (cd "$conf" && npm ci --silent --no-audit --no-fund >/dev/null)
  fi
fi
log "ready"
