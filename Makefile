# Two commands for a new user: `make demo` and `make test`. Both create .venv/ on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench bench-quick clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slimsearch demo

# The default suite: fast tests plus one tiny but real end-to-end search. Slow tests: test-all.
test: $(STAMP)
	@bash scripts/install-chromium.sh || echo "Chromium could not be installed: the report's browser tests will be skipped"
	@bash scripts/install-postgres.sh || echo "PostgreSQL could not be installed: the shared-study (postgres) tests will be skipped"
	$(BIN)/python -m pytest -m "not slow and not gpu" -q --durations=15

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

# How good is the search (README): default search vs random search vs the hand baseline, 3 tasks x 3 seeds.
bench: $(STAMP)
	$(BIN)/python bench/search_quality.py
	$(BIN)/python bench/quant_latency.py

bench-quick: $(STAMP)
	$(BIN)/python bench/search_quality.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
