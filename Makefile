# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint bench bench-setup bench-methods browser services clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU build from the local wheel; a plain `torch` would pull several GB of CUDA wheels.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# Debian's chromium for the page tests (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Redis and PostgreSQL are expected on 127.0.0.1; start them if they are down.
services:
	@bash scripts/ensure_services.sh

run: $(STAMP)
	$(VENV)/bin/cryoclust serve --demo

# Format, lint and the import-layer contracts (config in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Two pytest workers: most API, worker and page tests wait on processes of their own, so two
# share the machine's cores; one torch thread each, so neither oversubscribes the other. A test
# file stays on one worker (its module-scoped stacks are made once). Not loadgroup: pytest 9.2
# keeps test ids where pytest-xdist 3.8 no longer writes its group names.
PYTEST_PARALLEL = -n 2 --dist loadfile

test: lint browser services
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_PARALLEL)

# Engine and API only: no Chromium, no root (Redis and PostgreSQL are still used).
test-fast: lint services
	OMP_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_PARALLEL) tests/engine tests/service

bench: $(STAMP)
	$(VENV)/bin/cryoclust bench

# Benchmark anchors, not part of `make test`: RELION 3.1 (Debian) and ASPIRE (own venv).
bench-setup:
	@command -v relion_refine >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq relion; }
	test -x .venv-aspire/bin/python || $(PYTHON) -m venv .venv-aspire
	.venv-aspire/bin/python -m pip install --quiet "aspire>=0.14"

# Every method and both anchors on the held-out families (anchor results are cached).
bench-methods: $(STAMP) bench-setup
	nice -n 5 $(VENV)/bin/cryoclust bench --methods -g cpu

clean:
	rm -rf $(VENV) data .pytest_cache
