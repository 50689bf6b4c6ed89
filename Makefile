# The two commands of the quick start: `make demo` and `make test`. Both set up everything.
SHELL := /bin/bash
PY := .venv/bin/python
DEMO_KB := .cache/demo-kb

.PHONY: venv demo test test-fast lint kb bench clean

venv:
	@scripts/venv.sh

## Build the demo KB (if missing or stale) and link the bundled examples on the embedded default.
demo: venv
	@$(PY) -m retlink.cli demo

## The whole test suite (what CI runs).
test: venv
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q -ra

## Tests without the slow marks (servers, large models).
test-fast: venv
	@$(PY) -m pytest -q -m "not slow"

lint: venv
	@$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .cache runs .pytest_cache .ruff_cache
