# fleetchat: the two commands a newcomer needs are `make run` and `make test`.
# Each one installs what it needs first (scripts/bootstrap.sh is idempotent).
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: run test setup lint bench fleet clean

run: ## set up, then run the chat (backend + Reflex UI, embedded mode, no Redis)
	@scripts/bootstrap.sh python ui node
	@$(ENV) scripts/run.sh

test: ## set up, then run the whole test suite
	@scripts/bootstrap.sh python ui node apt:redis-server apt:postgresql apt:chromium apt:nginx
	@$(ENV) scripts/test.sh

setup: ## install everything without running anything
	@scripts/bootstrap.sh python ui node apt:redis-server apt:postgresql apt:chromium apt:nginx

lint:
	@$(ENV) ruff check . && ruff format --check .

bench: ## side-by-side benchmark against Node socket.io and naive python-socketio
	@scripts/bootstrap.sh python node apt:redis-server
	@$(ENV) python -m bench.run

fleet: ## Redis + 3 backends behind nginx + worker + UI (prod), like a deployment; Ctrl-C stops all
	@scripts/fleet.sh

clean:
	rm -rf .web .states data/*.db* artifacts
