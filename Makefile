# Deduction — `make help` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Exactly the versions in requirements.lock (hashes checked), then the project itself.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## create the virtualenv and install the locked versions (project, tests, linters)

lock: $(STAMP) ## refresh requirements.lock to the newest versions pyproject.toml allows
	$(VENV)/bin/uv pip compile pyproject.toml --extra test --extra dev --generate-hashes \
		--python-version 3.11 --universal --upgrade -q -o requirements.lock
	@echo "requirements.lock refreshed: run 'make install test' and commit it"

lint: $(STAMP) ## ruff check, ruff format --check, mypy on src/, the import contract
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/lint-imports

run: $(STAMP) ## start API + worker + reference Engine on the embedded PostgreSQL
	$(VENV)/bin/deduction serve --demo --with-engine

test: $(STAMP) ## run the test suite (DATABASE_URL / REDIS_URL when set, embedded otherwise)
	$(VENV)/bin/pytest -q

bench: $(STAMP) ## run the benchmarks beside their baselines; writes bench/results/*.json
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null 2>&1 || echo "wrk not installed: using the Python load generator"
	$(PY) -m bench.run $(BENCH)

SOAK_LOG_EXAMPLES ?= 500
soak: $(STAMP) ## log property test at SOAK_LOG_EXAMPLES (500) Engines, then the fault soak (SOAK_MINUTES, default 10); writes bench/results/soak.json
	DEDUCTION_PROPERTY_EXAMPLES=$(SOAK_LOG_EXAMPLES) $(VENV)/bin/pytest -q tests/integration/test_engine_log_property.py
	$(PY) -m bench.soak

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .data

.PHONY: help install lock lint run test bench soak clean
