# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test packages clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: the daemon and the answers web on the embedded defaults (./ledger.db from the
## bundled ledger, the file channel writing under var/outbox/, the web on
## http://127.0.0.1:8080 where the letters' links point); one Ctrl-C stops both
run: $(STAMP)
	test -f ledger.db || $(BIN)/reminder import data/jiyuan-2018-ledger.txt
	$(BIN)/reminder db upgrade
	@$(BIN)/reminder web & web=$$!; \
	trap 'kill $$web 2>/dev/null; wait $$web 2>/dev/null' EXIT INT TERM; \
	$(BIN)/reminder run

## packages: headless Chromium, its driver and a Chinese font, for the tests that lay
## out the HTML people read on a phone and drive the answers web; libfaketime, for the
## test that stops the daemon for three days (Debian's packages; installed once, as root)
packages:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  command -v faketime >/dev/null && fc-list :lang=zh | grep -q . || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium chromium-driver fonts-wqy-microhei faketime \
	    >/dev/null; }

## test: everything CI checks (ruff lint + format check, mypy, the systemd unit, pytest)
test: $(STAMP) packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	systemd/verify $(BIN)/reminder
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache var ledger.db ledger.db-wal ledger.db-shm ledger.db.lock
