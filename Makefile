# Two commands: `make demo` installs and starts the demo (`make demo PORT=9000` for another port); `make test`
# installs and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-python test-js install system-deps bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

PORT ?= 8765

demo: install
	$(BIN)/runcast serve --port $(PORT)

system-deps:
	@bash scripts/system-deps

test: install system-deps
	cd tests/specs && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/python -m pytest -q
	@if [ -f client_js/package.json ]; then cd client_js && npm ci --no-audit --no-fund --loglevel=error && RUNCAST_BIN=$(CURDIR)/$(BIN)/runcast npm test; fi

bench: install system-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) client_js/node_modules .pytest_cache
