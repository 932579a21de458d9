# Headroom: `make run` to try it, `make test` to test it. See README.md.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/headroom
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint format venv clean

# config/devserver.py reads (or first writes) .env, says which database and
# task mode it uses, and defaults DEBUG to true. `exec`: the server is make's
# own child, so that a SIGTERM make passes on reaches it, and stops it cleanly.
run: venv
	@PORT=$(PORT) exec $(PY) -m config.devserver

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
	$(VENV)/bin/lint-imports --no-cache  # one direction of imports: pyproject.toml

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
