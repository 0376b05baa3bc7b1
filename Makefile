# tidegate: every target sets up .venv first, so a fresh machine needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: run test test-all lint bench realworld browser clean

# Two distributions, installed in one call so that the gateway's dependency on tidegate-leaks
# is met by the folder leaks/, not looked up on PyPI.
$(STAMP): pyproject.toml leaks/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tidegate needs Python 3.11+, found " + sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./leaks -e '.[test,bench,plot]'
	@touch $@

run: $(STAMP)
	$(BIN)/tidegate serve $(ARGS)

# The dashboard's browser test drives Debian's chromium (playwright never downloads a
# browser here). Installed when missing and we may (root with apt); else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null \
	  || { echo "installing chromium for the dashboard's browser test"; \
	       (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	       || echo "chromium could not be installed: the browser test will skip"; }

test: $(STAMP) browser
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src leaks tests bench examples tools
	$(BIN)/ruff format --check src leaks tests bench examples tools
	$(BIN)/python tools/check_layers.py src leaks/src
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# Real projects' test suites (aiohttp, anyio, websockets, async-lru) plain and with --leaks,
# side by side; sources and venvs cached in .cache/realworld. Not part of `make test`: it
# downloads, and takes minutes. Compare times under the exclusive lock.
realworld: $(STAMP)
	$(BIN)/python -m bench.realworld $(ARGS)

# Runs the suite on every interpreter pyenv (or PATH) offers, each in its own venv.
test-all:
	@for v in 3.11 3.12 3.13; do \
	  py=$$(ls -d $$HOME/.pyenv/versions/$$v.*/bin/python 2>/dev/null | tail -n 1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v); \
	  if [ -z "$$py" ] || ! $$py -c pass 2>/dev/null; then echo "== python$$v: not found, skipped"; continue; fi; \
	  echo "== python$$v ($$py)"; \
	  $(MAKE) --no-print-directory test PYTHON=$$py VENV=.venv-$$v || exit 1; \
	done

clean:
	rm -rf $(VENV) .venv-3.* .mypy_cache .ruff_cache .pytest_cache build src/*.egg-info leaks/build leaks/src/*.egg-info
