# Two commands: `make demo` installs and starts the demo (`make demo PORT=9000` for another port); `make test`
# installs and runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-python test-js lint install system-deps bench clean

# Not silent: the first install takes about a minute, so it says what it does and pip shows each package.
$(BIN)/.installed: pyproject.toml
	@echo "==> Creating a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@echo "==> Installing runcast and its dependencies into $(VENV) (about a minute the first time; skipped next time)"
	$(BIN)/pip install --progress-bar on -e '.[test]'
	@echo "==> Installed"
	touch $@

install: $(BIN)/.installed

PORT ?= 8765

demo: install
	@echo "==> Starting the hub on port $(PORT) with the demo agents (Ctrl-C stops it)"
	$(BIN)/runcast serve --port $(PORT)

system-deps:
	@bash scripts/system-deps

test: install system-deps
	cd tests/specs && npm ci --no-audit --no-fund --loglevel=error
	cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error  # the test OpenID Provider (oidc-provider)
	$(MAKE) lint
	$(BIN)/python -m pytest -q
	@if [ -f client_js/package.json ]; then cd client_js && npm ci --no-audit --no-fund --loglevel=error && RUNCAST_BIN=$(CURDIR)/$(BIN)/runcast npm test; fi

# The code's shape (issue 22): the import-linter contracts (the layers, a core without I/O), ruff's lint rules and
# mypy (strict on the sans-I/O core), all configured in pyproject.toml. Fast, so they run before the tests.
lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check server/
	$(BIN)/mypy

bench: install system-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) client_js/node_modules tests/oidc/node_modules .pytest_cache
