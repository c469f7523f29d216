#!/usr/bin/env bash
# `make fleet`: a production-like fleet on this machine, in the foreground.
# Redis (AOF), PostgreSQL (the system of record), three backend instances
# behind Debian's nginx, the worker (mentions, archiver) and the Reflex UI
# (prod mode) pointed at nginx. Ctrl-C stops all.
# Options (or FLEET_* variables): scripts/fleet.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
case " $* " in *" --no-ui "*) tools=(python) ;; *) tools=(python ui node) ;; esac
scripts/bootstrap.sh "${tools[@]}" apt:redis-server apt:nginx apt:postgresql
source scripts/env.sh
exec python -m deploy.fleet "$@"
