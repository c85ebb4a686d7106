# Two commands do all set-up on a fresh machine with Python >= 3.11:
#   make demo   -- creates .venv, installs nfu-tui, runs it against the embedded simulator
#   make test   -- creates .venv, installs nfu-tui with test extras, runs the whole test suite
#   make test-real -- the suite against the real NixFleet dashboard and agents (tests/real): builds the
#                  kit from NIXFLEET_KIT (default ../shared/real-nixfleet) into .build/nixfleet first;
#                  skipped with one reason where it cannot be built
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NIXFLEET_KIT ?= ../shared/real-nixfleet

.PHONY: demo test test-real bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# nfu-tui alone (the demo), and with the test extras (tests, benchmarks): two stamps.
$(VENV)/.installed-app: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed-app
	$(BIN)/nfu-tui demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

test-real: $(VENV)/.installed
	REAL_NIXFLEET_KIT="$(abspath $(NIXFLEET_KIT))" NF_BIN="$(CURDIR)/.build/nixfleet" \
		$(BIN)/python -m pytest -m real -rfE tests/real

bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build .build *.egg-info
