# Two commands set everything up on a fresh machine:
#   make run   - install, start the three local llama.cpp tiers, serve the gateway on :8000
#   make test  - install, run every test (the real-model suite included)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= config.yaml
PYTEST_ARGS ?=

.PHONY: install system-deps run tiers-down test lint bench docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Tests need a real redis-server (shared windows), nginx (load-balancer topology), headless
# Chromium with its WebDriver (the status page is tested in a real browser) and docker-compose 1.29
# (validates docker/compose.yaml without a Docker engine).
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# WORKERS=N: N gateway processes on the port (default: server.workers in the config, 1). More than
# one needs windows.store: redis (or windows.per_worker: true); on this 2-core box the three local
# tiers, not the gateway, are the bottleneck, so the default stays one.
run: install
	$(VENV)/bin/recserve tiers up --config $(CONFIG)
	$(VENV)/bin/recserve serve --config $(CONFIG) $(if $(WORKERS),--workers $(WORKERS))

tiers-down: install
	$(VENV)/bin/recserve tiers down --config $(CONFIG)

# Two pytest-xdist workers: whole modules per worker (module fixtures start once), every real-model module
# on one worker (the llama.cpp tiers start once), handed out first (tests/support/scheduling.py).
# Serial, for debugging: `make test PYTEST_XDIST=` or `make test PYTEST_ARGS=-n0` (or `pytest -p no:xdist`).
PYTEST_XDIST ?= -n 2 --dist loadgroup

test: install system-deps
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check gateway policies tests bench
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench

# The documentation site on http://127.0.0.1:8001 (rebuilt on every change); `mkdocs build --strict`
# is part of the tests (tests/test_docs.py).
docs: install
	$(VENV)/bin/mkdocs serve --config-file mkdocs.yml --dev-addr 127.0.0.1:8001
