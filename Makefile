# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck format demo clean redis-server chaos

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check durapipe tests examples bench
	$(BIN)/ruff format --check durapipe tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests of the Redis checkpoint store start a real redis-server (Debian's) on a free port.
redis-server:
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

test: lint typecheck redis-server
	$(BIN)/python -m pytest -q

# 100 runs of a 5-step pipeline, 20% provider failures, two workers SIGKILLed at random.
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

format: $(STAMP)
	$(BIN)/ruff format durapipe tests examples bench
	$(BIN)/ruff check --fix durapipe tests examples bench

demo: $(STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
