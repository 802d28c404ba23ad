# flex-bridge: `make demo` and `make test` set up .venv from the pins themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast lint typecheck pytest demo emulator bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check flex_bridge tests $(wildcard bench)
	$(BIN)/ruff format --check flex_bridge tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy --strict flex_bridge tests

pytest: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck pytest

# Under a minute: lint and every test not marked slow (tests/conftest.py says which are).
test-fast: lint
	$(BIN)/pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/flex-bridge demo

emulator: $(STAMP)
	$(BIN)/flex-bridge emulator

# Several minutes: flex-bridge against the usual approach (docs/performance.md). Writes
# bench/results/latest.json; fails only on a correctness failure of the bridge, never on timing.
bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
