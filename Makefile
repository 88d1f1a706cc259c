# The one entry point: `make run` starts rqbeat, `make test` runs the tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp

.PHONY: install lock test test-fast test-unit lint run bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Refresh the lock after changing dependencies in pyproject.toml.
lock:
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev -o requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes pyproject.toml -c requirements.lock -o docker/requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes docker/dashboard.in -c requirements.lock -o docker/requirements-dashboard.lock

test: install
	$(BIN)/pytest

test-unit: install
	$(BIN)/pytest tests/unit

# The inner loop (under a minute): the pure tests and the client API against a private
# Redis. `make test` (what CI runs) is the whole suite; `pytest -m "not slow"` skips
# only the long scenarios.
test-fast: install
	$(BIN)/pytest -m "not slow" tests/unit tests/integration/test_store.py

lint: install
	$(BIN)/ruff check scheduler workers devtools tests bench examples
	$(BIN)/ruff format --check scheduler workers devtools tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

# A local demo: a private Redis (unless RQBEAT_REDIS_URL is set), two scheduler
# replicas, one worker and a demo schedule; Ctrl-C stops everything.
run: install
	$(BIN)/python -m devtools.demo

bench: install
	$(BIN)/python -m bench

# The long chaos run (CHAOS_MINUTES, default 10; CHAOS_SCHEDULES, default 200) -> bench/CHAOS.md.
chaos: install
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
