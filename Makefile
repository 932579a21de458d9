# Headroom: `make run` to try it, `make test` to test it. See README.md.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/headroom
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint format venv clean

run:
	@$(if $(DATABASE_URL),echo "Database: PostgreSQL from DATABASE_URL",echo "Database: SQLite at db.sqlite3 (DATABASE_URL is not set)")
	@$(if $(REDIS_URL),echo "Tasks: Celery worker on Redis from REDIS_URL",echo "Tasks: run in-process, no worker (REDIS_URL is not set)")
	@$(MAKE) --no-print-directory venv
	@DEBUG=$${DEBUG:-true} PORT=$(PORT) $(PY) -m config.devserver

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing dependencies into $(VENV) ..."
	@$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

test: venv
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

# Benchmarks (README, "Benchmarks"): about 4 minutes; prints a table and writes
# bench/results.json. Uses the databases headroom_bench* and Redis database 11.
.PHONY: bench
bench: venv
	$(PY) -m bench $(BENCH_ARGS)

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .mypy_cache .ruff_cache
