# Deduction — `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install the project with its test tools

run: $(STAMP) ## start API + worker + reference Engine on the embedded PostgreSQL
	$(VENV)/bin/deduction serve --demo --with-engine

test: $(STAMP) ## run the test suite (DATABASE_URL / REDIS_URL when set, embedded otherwise)
	$(VENV)/bin/pytest -q

bench: $(STAMP) ## run the benchmarks beside their baselines; writes bench/results/*.json
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk not installed: using the Python load generator"
	$(PY) -m bench.run $(BENCH)

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .data

.PHONY: help install run test bench clean
