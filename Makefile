# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: the daemon on the embedded defaults (./ledger.db from the bundled ledger, the
## file channel writing under var/outbox/); Ctrl-C stops it
run: $(STAMP)
	test -f ledger.db || $(BIN)/reminder import data/jiyuan-2018-ledger.txt
	$(BIN)/reminder run

## test: everything CI checks (ruff lint + format check, mypy, the systemd unit, pytest)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	systemd/verify $(BIN)/reminder
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache var ledger.db ledger.db-wal ledger.db-shm
