#!/usr/bin/env bash
# `make fleet`: a production-like fleet on this machine, in the foreground.
# Redis (AOF), three backend instances behind Debian's nginx, the mention
# worker and the Reflex UI (prod mode) pointed at nginx. Ctrl-C stops all.
# Options (or FLEET_* variables): scripts/fleet.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in *" --no-ui "*) tools=(python) ;; *) tools=(python node) ;; esac
scripts/bootstrap.sh "${tools[@]}" apt:redis-server apt:nginx
source scripts/env.sh
exec python -m deploy.fleet "$@"
