# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck format demo clean bench-batch

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check durapipe tests examples
	$(BIN)/ruff format --check durapipe tests examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff format durapipe tests examples
	$(BIN)/ruff check --fix durapipe tests examples

demo: $(STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

# A batch over 10,000 items on a dev server it starts; prints items completed and the history bound.
bench-batch: $(STAMP)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python bench/batch10k.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
