# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`,
# `make bench` (durapipe against hand-written temporalio), `make throttle` (provider throttling).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install ocr redis-server test-tools test lint typecheck format demo bench bench-batch bench-mthds throttle chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The embedded OCR engine of `extract` pipes is tesseract, a Debian package (not on PyPI): installed
# here so a fresh machine (CI's included) has it. Needs root or sudo; skipped when already present.
ocr:
	@command -v tesseract >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  echo "installing tesseract-ocr (apt-get) for the offline extract engine"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    tesseract-ocr tesseract-ocr-eng >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check durapipe tests examples bench
	$(BIN)/ruff format --check durapipe tests examples bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests of the Redis checkpoint store start a real redis-server (Debian's) on a free port.
redis-server:
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

# nginx terminates TLS in front of the dev server in the TLS/mTLS tests (the dev server has no TLS
# flags). Installed from Debian's packages when missing; the tests skip when it cannot be had.
test-tools:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	  else echo "nginx missing and not root: the TLS tests will be skipped"; fi; }

test: lint typecheck ocr redis-server test-tools
	$(BIN)/python -m pytest -q

# 100 runs of a 5-step pipeline, 20% provider failures, two workers SIGKILLed at random.
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

format: $(STAMP)
	$(BIN)/ruff format durapipe tests examples bench
	$(BIN)/ruff check --fix durapipe tests examples bench

demo: $(STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

bench: $(STAMP)
	$(BIN)/python -m bench

throttle: $(STAMP)
	$(BIN)/python -m bench.throttle

# The MTHDS peer race: the same bundles on Pipelex in-process (in its own venv, never a durapipe
# dependency), durapipe --local and durapipe on Temporal, against one fake provider; outputs must agree.
BENCH_VENV ?= .venv-bench
PIPELEX_VERSION ?= 0.92.2
$(BENCH_VENV)/.pipelex-$(PIPELEX_VERSION):
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'pipelex==$(PIPELEX_VERSION)'
	touch $@

bench-mthds: $(STAMP) $(BENCH_VENV)/.pipelex-$(PIPELEX_VERSION)
	$(BIN)/python -m bench.mthds_race --pipelex-python $(BENCH_VENV)/bin/python

# A batch over 10,000 items on a dev server it starts; prints items completed and the history bound.
bench-batch: $(STAMP)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python bench/batch10k.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
