# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`,
# `make bench` (durapipe against hand-written temporalio), `make throttle` (provider throttling).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck format demo bench throttle clean

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

test: lint typecheck
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff format durapipe tests examples bench
	$(BIN)/ruff check --fix durapipe tests examples bench

demo: $(STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

bench: $(STAMP)
	$(BIN)/python -m bench

throttle: $(STAMP)
	$(BIN)/python -m bench.throttle

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
