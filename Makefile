# flex-bridge: `make demo` and `make test` set up .venv from the pins themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test test-fast lint typecheck pytest sync-test demo emulator bench clean

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

# The browser half (sync/): npm workspaces installed from the committed lockfile, then the
# client package's build, type checks (against the real twilio-sync and @twilio/flex-ui
# declarations), unit tests and browser tests (Debian's chromium, the real bridge and
# emulator from .venv), and the example plugin's build.
SYNC_STAMP := sync/node_modules/.installed

$(SYNC_STAMP): sync/package-lock.json sync/package.json sync/client/package.json sync/plugin-example/package.json
	cd sync && npm ci --no-audit --no-fund --loglevel=error
	@touch $(SYNC_STAMP)

sync-test: $(STAMP) $(SYNC_STAMP)
	cd sync && npm test

test: lint typecheck pytest sync-test

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
	rm -rf sync/node_modules sync/client/dist sync/client/build sync/client/test-results sync/plugin-example/dist
