# The one entry point: `make run` starts rqbeat, `make test` runs the tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-stamp
# pyproject allows rq>=2.12,<4; CI tests both ends. The lock holds the lowest
# (RQ_LOCKED); a second venv, the lock plus RQ_HIGH, holds the highest.
RQ_LOCKED ?= rq==2.12.0
RQ_HIGH   ?= rq==3.0.0
VENV3   := .venv-rq3
BIN3    := $(VENV3)/bin
STAMP3  := $(VENV3)/.installed-stamp

.PHONY: install install-rq3 lock test test-rq3 test-fast test-unit lint run bench chaos clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install-rq3: $(STAMP3)

$(STAMP3): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV3)
	$(BIN3)/python -m pip install --quiet --upgrade pip uv
	$(BIN3)/uv pip install --quiet --python $(BIN3)/python -r requirements.lock
	$(BIN3)/uv pip install --quiet --python $(BIN3)/python '$(RQ_HIGH)'
	$(BIN3)/uv pip install --quiet --python $(BIN3)/python --no-deps -e .
	touch $(STAMP3)

# Refresh the lock after changing dependencies in pyproject.toml (RQ held at RQ_LOCKED).
lock:
	echo '$(RQ_LOCKED)' > $(VENV)/rq-locked.txt
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev -c $(VENV)/rq-locked.txt -o requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes pyproject.toml -c requirements.lock -o docker/requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes docker/dashboard.in -c requirements.lock -o docker/requirements-dashboard.lock

test: install
	$(BIN)/pytest

# The whole suite again under the highest RQ pyproject allows.
test-rq3: install-rq3
	$(BIN3)/pytest

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
	rm -rf $(VENV) $(VENV3) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
