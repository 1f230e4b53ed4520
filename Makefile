# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck format demo clean test-tools

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

# nginx terminates TLS in front of the dev server in the TLS/mTLS tests (the dev server has no TLS
# flags). Installed from Debian's packages when missing; the tests skip when it cannot be had.
test-tools:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	  else echo "nginx missing and not root: the TLS tests will be skipped"; fi; }

test: lint typecheck test-tools
	$(BIN)/python -m pytest -q

format: $(STAMP)
	$(BIN)/ruff format durapipe tests examples
	$(BIN)/ruff check --fix durapipe tests examples

demo: $(STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
