# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`,
# `make bench` (durapipe against hand-written temporalio), `make bench-peer` (and pydantic-ai),
# `make throttle` (provider throttling), `make chaos` (SIGKILLed workers, a provider that bills).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install ocr redis-server test-tools test lint typecheck format demo bench bench-peer bench-batch throttle chaos clean

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
	$(BIN)/python bench/chaos.py --provider both

format: $(STAMP)
	$(BIN)/ruff format durapipe tests examples bench
	$(BIN)/ruff check --fix durapipe tests examples bench

demo: $(STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

bench: $(STAMP)
	$(BIN)/python -m bench

# The peer race: durapipe, hand-written temporalio and pydantic-ai's Temporal integration against one
# fake provider and one dev server. pydantic-ai goes into the bench's own venv, never durapipe's.
PEER_VENV := bench/.venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP): pyproject.toml
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e . 'pydantic-ai-slim[openai,temporal]'
	touch $(PEER_STAMP)

bench-peer: $(PEER_STAMP)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(PEER_VENV)/bin/python -m bench.peer

throttle: $(STAMP)
	$(BIN)/python -m bench.throttle

# A batch over 10,000 items on a dev server it starts; prints items completed and the history bound.
bench-batch: $(STAMP)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python bench/batch10k.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
